"""A continuous attribute: age in years, next to a categorical gender head.

ML-100K records each user's age in years. A `ContinuousHead` regresses it
(standardised targets, Huber loss) through the gradient reversal layer while a
`CategoricalHead` handles gender. After training we ask two held-out attackers
what is left: a ridge regression on age (R^2; 0 = no better than the mean) and
a logistic regression on gender (balanced accuracy; 0.5 = chance).

Run: `python examples/continuous_age.py` (about a minute on 2 CPU cores).
"""

import numpy as np
import tensorflow as tf
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import cross_val_predict

import tfprivadv  # first: makes tf.keras Keras 2, as TFRS needs
from tfprivadv.audit import probe_embeddings
from tfprivadv.data import encode_attributes, training_dataset
from tfprivadv.datasets import leave_one_out, load_movielens
from tfprivadv.evaluation import evaluate

SEED = 0
ATTRIBUTES = {"gender": "categorical", "age": "continuous"}

data = load_movielens("100k")
train, test = leave_one_out(data.ratings, strategy="last")
labels = encode_attributes(data.users, ATTRIBUTES)
users = data.users[data.users["user_id"].isin(train["user_id"])]

for adversary_weight in (0.0, 0.03):
    tf.keras.utils.set_random_seed(SEED)
    recommender = tfprivadv.BPRRetrievalModel(
        data.users["user_id"],
        sorted(train["item_id"].unique()),
        embedding_dim=10,
        seed=SEED,
    )
    age_head = tfprivadv.ContinuousHead(hidden_units=(64,), loss="huber")
    age_head.adapt(labels.values["age"])  # standardise with the training mean / std
    model = tfprivadv.PrivacyAdversarialModel(
        recommender,
        heads={
            "gender": tfprivadv.CategoricalHead(2, hidden_units=(64,)),
            "age": age_head,
        },
        adversary_weight=adversary_weight,
    )
    dataset = training_dataset(
        train,
        labels,
        attributes=list(ATTRIBUTES),
        item_ids=recommender.item_vocabulary,
        batch_size=4096,
        seed=SEED,
    )
    model.compile(tf.keras.optimizers.Adam(0.01), steps_per_execution=8)
    history = model.fit(
        dataset, epochs=60, verbose=0, callbacks=[tfprivadv.AdversaryWeightScheduler()]
    )

    vectors = recommender.user_embeddings(users["user_id"]).numpy()
    ages = users["age"].to_numpy()
    predicted = cross_val_predict(RidgeCV(), vectors, ages, cv=5)
    gender = probe_embeddings(vectors, users[["gender"]], attackers="logistic")
    print(
        f"lambda = {adversary_weight}: HR@10 = {evaluate(model, train, test).hr:.4f}, "
        f"age head MAE during training = {history.history['age_mae'][-1]:.1f} years, "
        f"ridge attacker age R^2 = {r2_score(ages, predicted):.3f} "
        f"(MAE {np.abs(ages - predicted).mean():.1f} y), "
        f"gender balanced accuracy = {gender['balanced_accuracy'].iloc[0]:.3f}"
    )
