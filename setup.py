"""Packaging reads everything from settings.ini (the nbdev 2 convention), so there is one place to edit."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

SHIPPED = {"metacompress._nbs": ("nbs", ["manifest.yaml"]),
           "metacompress._nbs.profiles": ("nbs/profiles", ["*.yaml"]),
           "metacompress._figures.quick.predictor": ("figures/quick/predictor", ["ideal*.json", "diffusion*.json"])}

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    author=cfg["author"],
    license="Apache-2.0",
    python_requires=">=" + cfg["min_python"],
    # Package data, so that an installed (non-editable) package works from any directory: the profiles and the manifest
    # (`core.profiles_dir`) and the committed quick predictor of the two sources metacompress-recommend reads
    # (`recommend.default_predictor`), each mapped from its place in the checkout to a folder inside the package.
    packages=setuptools.find_packages(include=["metacompress", "metacompress.*"]) + list(SHIPPED),
    package_dir={k: v for k, (v, _) in SHIPPED.items()},
    package_data={k: g for k, (_, g) in SHIPPED.items()},
    include_package_data=True,
    install_requires=cfg["requirements"].split(),
    extras_require={"dev": cfg["dev_requirements"].split(), "lab": cfg["lab_requirements"].split(),
                    "ray": cfg["ray_requirements"].split()},
    entry_points={"console_scripts": cfg["console_scripts"].split()},
    zip_safe=False,
)
