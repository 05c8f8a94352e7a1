from setuptools import setup

setup(
    name="keras-digits-trainer",
    version="0.1.0",
    description="Anneal's TensorFlow example trainer: a Keras MLP on scikit-learn's bundled 8x8 digits.",
    packages=["trainer"],
)
