"Profiles are the single place for run sizes: the notebooks' defaults must equal the smoke profile."
import pytest
from metacompress.core import PROFILES, STEPS, load_profile, step_params
from metacompress.run import declared_parameters, notebook_for, parameters_for

EXISTING = [s for s in STEPS if notebook_for(s).is_file()]

@pytest.mark.parametrize("step", EXISTING)
def test_notebook_defaults_equal_smoke_profile(step):
    declared = declared_parameters(notebook_for(step))
    smoke = step_params("smoke", STEPS[step])
    assert declared == smoke, f"{notebook_for(step).name}: parameters cell {declared} != smoke profile {smoke}"

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("step", EXISTING)
def test_every_profile_sets_only_declared_parameters(profile, step):
    params = parameters_for(step, profile)
    assert params["profile"] == profile
    assert set(params) <= set(declared_parameters(notebook_for(step)))

def test_profiles_cover_the_same_keys():
    # a key present in one profile but missing in another silently falls back to the smoke default
    keys = {p: {s: set(load_profile(p).get(STEPS[s]) or {}) for s in EXISTING} for p in PROFILES}
    for s in EXISTING:
        assert keys["quick"][s] == keys["smoke"][s] == keys["paper"][s], s

def test_unknown_profile_key_is_refused(tmp_path, monkeypatch):
    import yaml, metacompress.core as core
    prof = load_profile("smoke"); prof["01_data"]["n_trian"] = 5
    d = tmp_path / "profiles"; d.mkdir(); (d / "typo.yaml").write_text(yaml.safe_dump(prof))
    monkeypatch.setattr(core, "profiles_dir", lambda: d)
    with pytest.raises(ValueError, match="n_trian"): parameters_for("data", "typo")

def test_readme_is_generated_from_index_notebook():
    from metacompress.core import project_root
    from metacompress.run import render_readme
    assert (project_root() / "README.md").read_text(encoding="utf-8") == render_readme(), "README.md is stale: run `make readme`"

# ---------------------------------------------------------------- issue 23: a profile is checked whole before anything runs
import yaml
import metacompress.run   # noqa: F401 - imports the modules that register method / source / member names
from metacompress.core import ProfileError, profiles_dir, validate_profile

def _mistake(tmp_path, edit, steps=None):
    prof = yaml.safe_load((profiles_dir() / "smoke.yaml").read_text()); edit(prof)
    path = tmp_path / "mine.yaml"; path.write_text(yaml.safe_dump(prof))
    with pytest.raises(ProfileError) as e: validate_profile(path, steps)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg                    # one line, naming the file
    return msg

@pytest.mark.parametrize("edit, want", [
    (lambda p: p.__setitem__("01_dta", p.pop("01_data")), "section '01_dta' is not a step: did you mean '01_data'?"),
    (lambda p: p.__setitem__("finetune", {}), "section 'finetune' is not a step: did you mean '02_finetune'?"),
    (lambda p: p.pop("03_generate"), "section '03_generate' is missing"),
    (lambda p: p["01_data"].pop("n_ideal"), "01_data.n_ideal is not set"),
    (lambda p: p["01_data"].update(n_trian=5), "01_data.n_trian is not a parameter of 01_data.ipynb: did you mean 'n_train'?"),
    (lambda p: p["02_finetune"].update(pt_steps="two"), "02_finetune.pt_steps = 'two' must be an integer"),
    (lambda p: p["01_data"].update(n_test=0), "01_data.n_test = 0 must be > 0"),
    (lambda p: p["01_data"].update(n_train=-3), "01_data.n_train = -3 must be > 0"),
    (lambda p: p["04_compress"].update(calib_images=-1), "04_compress.calib_images = -1 must be >= 0"),
    (lambda p: p["02_finetune"].update(epochs=0), "02_finetune.epochs = 0 must be > 0"),
    (lambda p: p["02_finetune"].update(label_smoothing=1.5), "02_finetune.label_smoothing = 1.5 must be in [0, 1]"),
    (lambda p: p["01_data"].update(n_ideal=None), "01_data.n_ideal = None must not be null"),
    (lambda p: p["02_finetune"].update(lr="fast"), "02_finetune.lr = 'fast' must be a number"),
    (lambda p: p["05_extract"].update(methods=["none", "global_magnitud"]), "has unknown name 'global_magnitud' (did you mean 'global_magnitude'?)"),
    (lambda p: p["05_extract"].update(sources=["ideal", "difusion"]), "has unknown name 'difusion'"),
    (lambda p: p["02_finetune"].update(engine="rey"), "02_finetune.engine = 'rey' has unknown name 'rey'"),
    (lambda p: p["common"].update(sed=1), "common.sed is not a parameter of any step's notebook: did you mean 'seed'?"),
])
def test_each_kind_of_profile_mistake_is_one_line(tmp_path, edit, want):
    msg = _mistake(tmp_path, edit)
    assert want in msg, msg
    assert "fix" in msg or "add" in msg or "rename" in msg or "remove" in msg, msg

@pytest.mark.parametrize("profile", sorted(p.stem for p in profiles_dir().glob("*.yaml")))
def test_shipped_profiles_pass_whole(profile):
    validate_profile(profile, ["data"] if profile == "paper-imagenet" else None)

def test_make_step_refuses_a_bad_profile_before_running(tmp_path, monkeypatch, capsys):
    "`make data` / `make reproduce` with a misspelled section: exit 1, one line, no step started, nothing recorded."
    import metacompress.core as core
    from metacompress.run import main, run_record_path
    d = tmp_path / "profiles"; d.mkdir()
    for f in profiles_dir().glob("*.yaml"): (d / f.name).write_text(f.read_text())
    (d / "quick.yaml").write_text((d / "quick.yaml").read_text().replace("\n01_data:", "\n01_dta:"))
    monkeypatch.setattr(core, "profiles_dir", lambda: d)
    monkeypatch.setenv("METACOMPRESS_FIGURES_DIR", str(tmp_path / "figures")); monkeypatch.setenv("METACOMPRESS_DATA_DIR", str(tmp_path / "data"))
    for step in ("data", "all"):
        with pytest.raises(SystemExit) as e: main([step, "--profile", "quick"])
        assert e.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "quick.yaml: section '01_dta' is not a step: did you mean '01_data'?" in err[0], err
    assert not run_record_path("quick").exists()


# --- one settings object per step: its defaults are the smoke profile's section, every shipped profile loads into it
from metacompress.data import DataSettings
from metacompress.evaluate import EvaluateSettings
from metacompress.generate import GenerateSettings
from metacompress.settings import SettingsError

STEP_SETTINGS = [DataSettings, GenerateSettings, EvaluateSettings]

@pytest.mark.parametrize("cls", STEP_SETTINGS, ids=lambda c: c.SECTION)
def test_settings_defaults_are_the_smoke_section(cls):
    assert cls.from_params(step_params("smoke", cls.SECTION)) == cls()

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("cls", STEP_SETTINGS, ids=lambda c: c.SECTION)
def test_every_profile_section_loads_into_its_settings(cls, profile):
    s = cls.from_params(step_params(profile, cls.SECTION))
    assert {k: getattr(s, k) for k in load_profile(profile).get(cls.SECTION, {})} == load_profile(profile)[cls.SECTION]
    key = next(iter(load_profile(profile)[cls.SECTION]))          # a typo of the section's first key names that key
    with pytest.raises(SettingsError, match=f"unknown {cls.SECTION} key '{key[:-1]}': did you mean '{key}'"):
        cls.from_params({**step_params(profile, cls.SECTION), key[:-1]: True})
