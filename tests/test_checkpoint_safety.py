"""RL checkpoints are data, not code (issue 11 A): paths are confined to the configured checkpoint roots and
loading never unpickles, so a crafted checkpoint directory cannot run code inside or outside a root."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import ray

from edgeray.config import SizerConfig
from edgeray.paths import resolve_checkpoint
from policies.rl_policy import MODULE_SUBDIR, POLICY_META, WEIGHTS_FILE, RLPolicy
from tune import rl


class _Payload:
    """Unpickling this writes `marker`: what a crafted checkpoint would do with RLlib's pickle loader."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def craft_checkpoint(directory, marker, *, with_module_spec: bool) -> None:
    """A checkpoint dir with a plausible policy.json and malicious pickles wherever RLlib would read them
    (and, with the module spec, a weights file whose array is a pickled object)."""
    module_dir = directory / MODULE_SUBDIR
    module_dir.mkdir(parents=True)
    for name in ("class_and_ctor_args.pkl", "module_state.pkl"):
        (module_dir / name).write_bytes(pickle.dumps(_Payload(marker)))
    meta = {"algo": "ddpg", "env": "pendulum", "env_config": {}, "action_low": [-2.0], "action_high": [2.0],
            "obs_dim": 3}
    if with_module_spec:
        meta["module"] = {"weights": WEIGHTS_FILE, "model_config": {"actor_hiddens": [4], "critic_hiddens": [4]},
                          "observation_low": [-1.0] * 3, "observation_high": [1.0] * 3}
        np.save(directory / "evil.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
        with open(directory / WEIGHTS_FILE, "wb") as fh:  # an .npz is a zip of .npy members
            import zipfile

            with zipfile.ZipFile(fh, "w") as zf:
                zf.write(directory / "evil.npy", "pi.0.weight.npy")
    (directory / POLICY_META).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def genuine(ray_session, tmp_path_factory):
    """One real (barely trained) DDPG checkpoint under a checkpoint root."""
    root = tmp_path_factory.mktemp("ckpt-root")
    checkpoint = rl.train("ddpg", "pendulum", 1, root / "genuine", eval_episodes=1)["checkpoint"]
    return root, checkpoint


# ------------------------------------------------------------------ the resolver (no Ray)
def test_resolver_refuses_outside_traversal_symlink_escape_missing_and_files(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ok").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "file").write_text("x")
    assert resolve_checkpoint(root / "ok", [str(root)]) == (root / "ok").resolve()

    cases = [(outside, "is outside the allowed roots"),
             (tmp_path / "nowhere", "is outside the allowed roots"),  # same answer: outside paths are not probed
             (f"{root}/ok/../../outside", "'..' component"),
             (f"{root}/ok/..", "'..' component"),
             (root / "escape", "symlink that escapes"),
             (root / "missing", "does not exist"),
             (root / "file", "is not a directory")]
    for value, reason in cases:
        with pytest.raises(ValueError) as err:
            resolve_checkpoint(value, [str(root)])
        message = str(err.value)
        assert message.startswith(f"checkpoint {str(value)!r} ") and reason in message, message
        assert str(root.resolve()) in message  # the roots are named
    with pytest.raises(ValueError, match="no roots configured"):
        resolve_checkpoint(root / "ok", [])


def test_root_reached_through_a_symlink_still_accepts_its_children(tmp_path):
    real = tmp_path / "data" / "rl"
    (real / "run").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert resolve_checkpoint(tmp_path / "link" / "run", [str(tmp_path / "link")]) == (real / "run").resolve()


def test_sizer_config_defaults_to_runs_rl_and_needs_a_root():
    assert SizerConfig().checkpoint_roots == ["runs/rl"]
    with pytest.raises(ValueError, match="checkpoint_roots"):
        SizerConfig(checkpoint_roots=[])


# ------------------------------------------------------------------ loading without pickle
def test_crafted_checkpoint_inside_a_root_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    old_style, new_style = tmp_path / "root" / "old", tmp_path / "root" / "new"
    craft_checkpoint(old_style, marker, with_module_spec=False)
    craft_checkpoint(new_style, marker, with_module_spec=True)
    roots = [str(tmp_path / "root")]
    with pytest.raises(ValueError, match="predates safe loading"):  # RLlib's pickles are never read
        RLPolicy.load(old_style, roots=roots)
    with pytest.raises(ValueError, match="do not load"):  # the object array is refused, not unpickled
        RLPolicy.load(new_style, roots=roots)
    assert not marker.exists()
    # The payload is live: the loader above, not a dud pickle, is what kept the marker from appearing.
    pickle.loads((old_style / MODULE_SUBDIR / "module_state.pkl").read_bytes())
    assert marker.read_text() == "pwned"


def test_policy_json_symlinked_out_of_the_checkpoint_is_refused(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    checkpoint = tmp_path / "root" / "ckpt"
    checkpoint.mkdir(parents=True)
    (checkpoint / POLICY_META).symlink_to(secret)
    with pytest.raises(ValueError, match="policy.json is a symlink that escapes"):
        RLPolicy.load(checkpoint, roots=[str(tmp_path / "root")])


def test_genuine_checkpoint_loads_without_pickle_and_acts_like_rllibs_module(genuine):
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    root, checkpoint = genuine
    policy = RLPolicy.load(checkpoint, roots=[str(root)])
    reference = RLModule.from_checkpoint(f"{checkpoint}/{MODULE_SUBDIR}")  # RLlib's pickled path, our own file
    obs = np.random.default_rng(3).uniform(-1, 1, size=(32, 3)).astype(np.float32)
    with torch.no_grad():
        raw = reference.forward_inference({Columns.OBS: torch.from_numpy(obs)})[Columns.ACTIONS].numpy()
    np.testing.assert_array_equal(policy.act(obs), 2.0 * np.clip(raw, -1, 1).astype(np.float64))  # Box [-2, 2]
    assert {k: v.shape for k, v in policy.module.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}


# ------------------------------------------------------------------ the policy-server actor
def test_policy_server_refuses_checkpoints_outside_its_roots(ray_session, tmp_path, genuine):
    from actors.policy_server import PolicyServerActor

    root, checkpoint = genuine
    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted"
    craft_checkpoint(crafted, marker, with_module_spec=False)
    escape = root / f"escape-{tmp_path.name}"
    escape.symlink_to(crafted, target_is_directory=True)

    with pytest.raises(ray.exceptions.RayActorError, match="outside the allowed roots"):
        ray.get(PolicyServerActor.remote(str(crafted), None, None, None, [str(root)]).status.remote())
    server = PolicyServerActor.remote(checkpoint, None, None, None, [str(root)])
    try:
        version = ray.get(server.status.remote())["version"]
        for method in (server.swap, server.set_shadow):
            for value, reason in [(str(crafted), "outside the allowed roots"),
                                  (f"{root}/genuine/../../{crafted.parent.name}/crafted", "'..' component"),
                                  (str(escape), "symlink that escapes")]:
                with pytest.raises(ray.exceptions.RayTaskError) as err:
                    ray.get(method.remote(value))
                assert isinstance(err.value.cause, ValueError)
                assert f"checkpoint {value!r}" in str(err.value.cause) and reason in str(err.value.cause)
                assert str(root.resolve()) in str(err.value.cause)
        status = ray.get(server.status.remote())
        assert status["version"] == version and status["shadow_version"] is None and status["swaps"] == []
        assert ray.get(server.set_shadow.remote(checkpoint))["shadow_version"] == version  # inside: accepted
    finally:
        ray.kill(server)
    assert not marker.exists()


def test_retrain_output_outside_the_roots_is_refused_at_start(ray_session, tmp_path, genuine):
    from actors.policy_server import PolicyServerActor

    root, checkpoint = genuine
    retrain = {"algo": "ddpg", "env": "trading", "steps": 1, "out_dir": str(tmp_path / "retrain")}
    with pytest.raises(ray.exceptions.RayActorError, match="retrain_on_drift.out_dir"):
        ray.get(PolicyServerActor.remote(checkpoint, None, retrain, None, [str(root)]).status.remote())
