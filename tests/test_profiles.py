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
