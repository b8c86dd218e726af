"""Privacy-adversarial BPR on MovieLens 100K, end to end with the public API.

Trains the same BPR recommender twice — once plain (lambda = 0, the heads only
watch) and once with adversarial gender and age heads (lambda = 0.03) — then
compares utility (HR@10 by full ranking) and how well a held-out
logistic-regression attacker reads gender and age group from the user vectors.

Run: `python examples/quickstart.py` (about a minute on 2 CPU cores). The data
comes from $TFPRIVADV_DATA_DIR, the cache, GroupLens, or the ML-100K copy in the
recbole wheel on PyPI, in that order.
"""

import tensorflow as tf

import tfprivadv  # first: makes tf.keras Keras 2, as TFRS needs
from tfprivadv.audit import probe_embeddings
from tfprivadv.data import encode_attributes, training_dataset
from tfprivadv.datasets import leave_one_out, load_movielens
from tfprivadv.evaluation import evaluate

SEED = 0
ATTRIBUTES = ["gender", "age_group"]

data = load_movielens("100k")
train, test = leave_one_out(data.ratings, strategy="last")
labels = encode_attributes(data.users, ATTRIBUTES)

for adversary_weight in (0.0, 0.03):
    tf.keras.utils.set_random_seed(SEED)
    recommender = tfprivadv.BPRRetrievalModel(
        data.users["user_id"],
        sorted(train["item_id"].unique()),
        embedding_dim=10,
        seed=SEED,
    )
    model = tfprivadv.PrivacyAdversarialModel(
        recommender,
        heads={
            "gender": tfprivadv.CategoricalHead(labels.num_classes("gender"), hidden_units=(64,)),
            "age_group": tfprivadv.CategoricalHead(
                labels.num_classes("age_group"), hidden_units=(64,)
            ),
        },
        adversary_weight=adversary_weight,
    )
    dataset = training_dataset(
        train,
        labels,
        attributes=ATTRIBUTES,
        item_ids=recommender.item_vocabulary,
        batch_size=4096,
        seed=SEED,
    )
    model.compile(tf.keras.optimizers.Adam(0.01), steps_per_execution=8)
    model.fit(
        dataset,
        epochs=60,
        verbose=0,
        # Ganin's warm-up: lambda grows from 0, so the recommender learns first.
        callbacks=[tfprivadv.AdversaryWeightScheduler("ganin")],
    )

    utility = evaluate(model, train, test, k=10)
    users = data.users[data.users["user_id"].isin(train["user_id"])]
    vectors = recommender.user_embeddings(users["user_id"]).numpy()
    leakage = probe_embeddings(vectors, users[ATTRIBUTES], attackers="logistic")
    print(f"\nlambda = {adversary_weight}: HR@10 = {utility.hr:.4f}")
    print(
        leakage[
            [
                "attribute",
                "accuracy",
                "chance_accuracy",
                "balanced_accuracy",
                "chance_balanced_accuracy",
            ]
        ]
        .round(3)
        .to_string(index=False)
    )
