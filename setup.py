from setuptools import find_packages, setup

setup(
    name="pointcalip",
    version="0.1.0",
    description="Zero-shot and few-shot 3D point cloud classification with CLIP (PointCLIP projection + CALIP attention).",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["pointcalip", "pointcalip.*"]),
    include_package_data=True,
    package_data={"pointcalip": ["presets/*.yaml"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.24",
        "numpy>=1.24",
        "h5py>=3.8",
        "open3d>=0.17",
        "fpsample>=0.3",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "safetensors>=0.4",
        "pillow>=9.0",
    ],
    extras_require={"dev": ["pytest>=7.0"]},
    entry_points={"console_scripts": ["pointcalip=pointcalip.cli:main"]},
)
