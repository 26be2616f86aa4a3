"""tfsmooth: certified adversarial robustness by randomized smoothing in TensorFlow/Keras."""

from setuptools import setup

setup(
    name="tfsmooth",
    version="0.1.0",
    description="Certified adversarial robustness by randomized smoothing (Cohen et al. 2019) for TensorFlow/Keras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["tfsmooth", "tfsmooth.jobs", "tfsmooth.models", "tfsmooth.resources", "tfsmooth.cli"],
    package_dir={"tfsmooth.cli": "cli"},
    package_data={"tfsmooth.resources": ["*.npz"]},
    install_requires=[
        "tensorflow>=2.16,<3",
        "keras>=3.15",  # tested with 3.15; training.SmoothingTrainer relies on compute_loss dividing by the replicas
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets (4.9.10) imports importlib_resources inside tfds.load without declaring it on Python >= 3.9
        "importlib_resources>=5.10",
        "numpy>=1.24",
        "scipy>=1.11",
        "click>=8.1",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "jupyter_client>=8"]},
    entry_points={"console_scripts": ["tfsmooth=tfsmooth.cli.main:cli"]},
)
