"""Export the quickstart's protected recommender for TF Serving and query the export.

Trains the quickstart's lambda = 0.03 model on MovieLens 100K (BPR dim 10 with
adversarial gender and age-group heads, 60 epochs), then exports only the
recommender with `export_for_serving`: the heads stay behind, each user's
training items are baked in so they are never served again, and the version
lands in `saved_models/quickstart/<version>/`, the folder `tensorflow_model_server
--model_base_path` polls. The export is then loaded with `tf.saved_model.load`,
as a server would (it needs TensorFlow only), and its three signatures are
queried: top-10 lists, user vectors and single (user, item) scores, for known
users and for an id the model never saw.

Run: `python examples/serve.py [--export-dir saved_models/quickstart]` (about half a
minute on 2 CPU cores). Each run adds a version; `tfprivadv export RUN_DIR --name NAME`
does the same for a run folder.
"""

import argparse

import numpy as np
import tensorflow as tf

import tfprivadv  # first: makes tf.keras Keras 2, as TFRS needs
from tfprivadv.data import encode_attributes, training_dataset
from tfprivadv.datasets import leave_one_out, load_movielens
from tfprivadv.export import export_for_serving, signature_summary

SEED = 0
ATTRIBUTES = ["gender", "age_group"]

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--export-dir", default="saved_models/quickstart")
parser.add_argument("--epochs", type=int, default=60)
args = parser.parse_args()

data = load_movielens("100k")
train, test = leave_one_out(data.ratings, strategy="last")
labels = encode_attributes(data.users, ATTRIBUTES)

tf.keras.utils.set_random_seed(SEED)
recommender = tfprivadv.BPRRetrievalModel(
    data.users["user_id"], sorted(train["item_id"].unique()), embedding_dim=10, seed=SEED
)
model = tfprivadv.PrivacyAdversarialModel(
    recommender,
    heads={
        name: tfprivadv.CategoricalHead(labels.num_classes(name), hidden_units=(64,))
        for name in ATTRIBUTES
    },
    adversary_weight=0.03,
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
    epochs=args.epochs,
    verbose=0,
    callbacks=[tfprivadv.AdversaryWeightScheduler("ganin")],
)

# Only the recommender goes out; `exclude_seen=train` bakes in each user's
# training items so the server never recommends what the user already rated.
path = export_for_serving(model, args.export_dir, k=10, exclude_seen=train)
print(f"Exported to {path}\n{signature_summary(path)}\n")

# What a server does: load with TensorFlow alone and call the signatures.
loaded = tf.saved_model.load(str(path))
users = tf.constant([1, 2, 999_999], tf.int64)  # 999999 is unknown: the OOV vector
top = loaded.signatures["serving_default"](user_id=users)
for user, items, scores in zip(
    users.numpy(), top["item_ids"].numpy(), top["scores"].numpy(), strict=True
):
    titles = data.items.set_index("item_id")["title"].reindex(items[:3]).tolist()
    print(f"user {user}: items {items.tolist()}")
    print(f"  scores {' '.join(f'{x:.2f}' for x in scores)}\n  top 3: {titles}")

# The served lists are exactly what the in-process model recommends.
expected, _ = recommender.recommend(users.numpy(), 10, exclude=train)
print("\nsame top-10 as model.recommend:", bool((top["item_ids"].numpy() == expected).all()))

vectors = loaded.signatures["user_embedding"](user_id=users)["embedding"].numpy()
print("user vectors, first 4 dims:\n", np.round(vectors[:, :4], 3))
scores = loaded.signatures["score"](
    user_id=tf.constant([1, 1], tf.int64), item_id=tf.constant([50, 123_456], tf.int64)
)["score"].numpy()
# Item 50 (Star Wars) scores high for user 1 but is absent from the list: user 1
# rated it in training. An unknown item is scored with the OOV row (0).
print(f"score(user 1, item 50) = {scores[0]:.3f}; unknown item 123456 -> {scores[1]:.3f}")
