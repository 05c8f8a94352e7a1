from setuptools import setup

setup(
    name="digits-trainer",
    version="0.1.0",
    description="Anneal's example trainer: an MLP on scikit-learn's bundled 8x8 digits.",
    packages=["trainer"],
)
