import random

import pytest
import torch

from actors.learner import shuffled_groups
from algorithms.dpo import DPO, DPOOptions, OnlineDPO, OnlineDPOOptions, best_worst_pairs
from algorithms.ppo import PPO, PPOOptions, adaptive_kl_coef, token_rewards
from launch.build import configure
from rlcore.config import ConfigError, LearnerConfig
from tests.test_batch import make

PPO_PRESET = "launch/configs/ppo_arithmetic.yaml"
DPO_PRESET = "launch/configs/dpo_arithmetic.yaml"
ONLINE_DPO_PRESET = "launch/configs/online_dpo_arithmetic.yaml"


def test_token_rewards_put_score_on_last_token_minus_kl():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    r = token_rewards(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.25 + 2.0, 0.0, 0.0]]))


def test_token_rewards_of_a_multi_turn_episode_put_the_score_on_its_last_model_token():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]])  # a model turn, two tool tokens, the answer, padding
    r = token_rewards(torch.tensor([1.0]), torch.zeros(1, 6), mask, kl_coef=0.5)
    assert r.tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]


def test_adaptive_kl_moves_towards_target_within_20_percent():
    assert adaptive_kl_coef(0.1, kl=0.2, target=0.1, samples=100, horizon=100) == pytest.approx(0.12)  # error clipped to +0.2
    assert adaptive_kl_coef(0.1, kl=0.09, target=0.1, samples=50, horizon=100) == pytest.approx(0.1 * (1 - 0.1 * 0.5))


def test_ppo_advantages_are_whitened_gae_and_returns_target_values():
    plan = configure(PPO_PRESET, ["algorithm.kl_target=0.01", "algorithm.lam=1.0"])
    ppo = plan.algorithm
    assert type(ppo) is PPO and isinstance(ppo.options, PPOOptions)
    batch = make([[1, 2], [3, 4]])
    batch.scores = torch.tensor([1.0, 0.0])
    batch.ref_logprobs = batch.rollout_logprobs.clone()  # KL 0
    batch.values = torch.zeros(2, 2)
    metrics = ppo.compute_advantages(batch)
    # gamma = lam = 1, values 0: returns are the score on every token
    assert batch.returns.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert torch.allclose(batch.advantages.mean(), torch.tensor(0.0), atol=1e-6)
    assert batch.advantages[0, 0] > 0 > batch.advantages[1, 0]
    assert metrics["kl_coef"] == 0.01 and ppo.kl_coef < 0.01  # observed KL 0 < target: the coefficient shrinks
    # critic_warmup_steps=2: the critic trains from step 1, the policy from step 3
    assert [ppo.trains("actor", s) for s in (1, 2, 3)] == [False, False, True]
    assert all(ppo.trains("critic", s) for s in (1, 2, 3))
    restored = PPO(plan.cfg, plan.algorithm.options)
    assert restored.kl_coef == 0.01
    restored.load_state_dict(ppo.state_dict())
    assert restored.kl_coef == ppo.kl_coef
    restored.load_state_dict({})  # a state without the key keeps the coefficient
    assert restored.kl_coef == ppo.kl_coef


def test_ppo_learner_groups_critic_first_with_their_own_settings():
    plan = configure(PPO_PRESET, ["algorithm.critic_path=/models/critic", "algorithm.critic.micro_batch_size=16"])
    assert list(plan.learners) == ["critic", "actor"]  # the critic trains first
    critic, actor = plan.learners["critic"], plan.learners["actor"]
    assert critic.spec.model == "value" and critic.spec.loss == "critic_loss"
    assert critic.spec.settings_key == "algorithm.critic" and critic.spec.provides == {"values": "values"}
    assert critic.spec.model_path == "/models/critic"
    assert isinstance(critic.spec.settings, LearnerConfig)
    assert (critic.spec.settings.lr, critic.spec.settings.mini_batch_size, critic.spec.settings.micro_batch_size) \
        == (3e-4, 256, 16)  # from the preset's algorithm.critic, and the override
    assert actor.spec.model == "causal_lm" and actor.spec.loss == "loss" and actor.spec.settings is plan.cfg.learner
    assert actor.spec.provides == {"old_logprobs": "logprobs"} and actor.spec.model_path is None
    from actors.models import CausalLM, ValueModel

    assert critic.model is ValueModel and actor.model is CausalLM
    # Without critic_path the critic starts from the policy's weights; an unset critic keeps its own default lr.
    defaults = configure(None, ["algorithm.name=ppo"]).algorithm.options
    assert defaults.critic_path is None and defaults.critic.lr == 1e-4


def test_ppo_critic_loss_is_the_clipped_value_loss():
    ppo = configure(PPO_PRESET, ["algorithm.value_clip=0.5"]).algorithm
    batch = make([[1, 2, 3]])
    batch.values = torch.zeros(1, 3)  # old values
    batch.returns = torch.tensor([[2.0, 0.5, 0.5]])
    values = torch.tensor([[1.0, 0.2, -1.0]])
    loss, metrics = ppo.critic_loss({"values": values}, batch)
    # clipped v = [.5, .2, -.5]; max((v-R)^2, (vc-R)^2) = [2.25, .09, 2.25]; 0.5 * mean = 0.765
    assert loss.item() == pytest.approx(0.765)
    assert metrics["value_loss"] == pytest.approx(0.765)
    assert metrics["values"] == pytest.approx((1.0 + 0.2 - 1.0) / 3)
    assert metrics["vf_clip_frac"] == pytest.approx(1 / 3)


def test_ppo_policy_loss_leaves_the_kl_to_the_rewards():
    ppo = configure(PPO_PRESET, ["algorithm.kl_coef=0.5"]).algorithm
    batch = make([[1, 2]])
    lp = torch.tensor([[-1.0, -1.0]])
    batch.old_logprobs, batch.advantages = lp.clone(), torch.tensor([[1.0, 1.0]])
    batch.ref_logprobs = lp - 0.1  # k3 KL > 0, logged but not added
    loss, metrics = ppo.loss({"logprobs": lp, "entropy": torch.zeros_like(lp)}, batch)
    assert loss.item() == pytest.approx(-1.0)  # -A * ratio 1
    assert metrics["kl"] > 0


def test_ppo_validation_messages():
    for overrides, message in [
        (["algorithm.critic.mini_batch_size=48"],
         "algorithm.critic.mini_batch_size=48 must divide data.prompts_per_step × rollout.n = 512"),
        (["algorithm.critic.world_size=3"],
         "algorithm.critic.mini_batch_size=256 must be divisible by algorithm.critic.world_size=3"),
        (["algorithm.critic.lrr=1"], "unknown key 'algorithm.critic.lrr'; allowed under 'algorithm.critic': world_size"),
        (["algorithm.kl_target=0"], "algorithm.kl_target=0.0 must be > 0"),
        (["rollout.temperature=0"], "rollout.temperature=0.0: PPO needs sampling"),
    ]:
        with pytest.raises(ConfigError) as info:
            configure(PPO_PRESET, overrides)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_best_worst_pairs_skip_ties():
    scores = torch.tensor([0.0, 1.0, 0.5, 1.0, 1.0, 0.2, 0.9, 0.1])
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    assert best_worst_pairs(scores, ids) == [1, 0, 6, 7]


def test_online_dpo_filter_builds_pairs():
    batch = make([[1]] * 4)
    batch.group_ids, batch.scores = torch.tensor([0, 0, 1, 1]), torch.tensor([0.0, 1.0, 1.0, 1.0])
    online = configure(ONLINE_DPO_PRESET).algorithm
    assert type(online) is OnlineDPO and online.options == OnlineDPOOptions(beta=0.1)
    assert online.source == "rollout" and online.group_size() == 2 and online.max_sampling_rounds() == 4
    kept, dropped = online.filter_groups(batch)
    assert kept.scores.tolist() == [1.0, 0.0] and kept.group_ids.tolist() == [0, 0] and dropped is None


def test_dpo_loss_on_pairs():
    dpo = configure(DPO_PRESET, ["algorithm.beta=1.0"]).algorithm
    assert type(dpo) is DPO and dpo.options == DPOOptions(beta=1.0, loss="sigmoid", label_smoothing=0.0)
    assert dpo.source == "preferences" and list(dpo.learners()) == ["actor"]
    assert dpo.learners()["actor"].provides == {}  # no old log-probs: the reference is the only baseline
    batch = make([[1], [1], [1], [1]])
    batch.ref_logprobs = torch.zeros(4, 1)
    logprobs = torch.tensor([[1.0], [0.0], [0.0], [1.0]])  # pair 0 prefers chosen, pair 1 the rejected
    loss, metrics = dpo.loss({"logprobs": logprobs, "entropy": torch.zeros(4, 1)}, batch)
    # sigmoid loss: mean(-logsigmoid(1), -logsigmoid(-1))
    expected = (-torch.nn.functional.logsigmoid(torch.tensor(1.0)) - torch.nn.functional.logsigmoid(torch.tensor(-1.0))) / 2
    assert loss.item() == pytest.approx(expected.item())
    assert metrics["reward_accuracy"] == 0.5 and metrics["margin"] == pytest.approx(0.0)


def test_dpo_validation():
    for preset, overrides, message in [
        (DPO_PRESET, ["algorithm.loss=x"], "algorithm.loss='x' is not one of sigmoid"),
        (DPO_PRESET, ["algorithm.beta=0"], "algorithm.beta=0.0 must be > 0"),
        (DPO_PRESET, ["algorithm.label_smoothing=0.5"], "algorithm.label_smoothing=0.5 must be in [0, 0.5)"),
        (DPO_PRESET, ["reference.enabled=false"], "DPO compares against the reference policy"),
        (DPO_PRESET, ["learner.micro_batch_size=3"],
         "learner.micro_batch_size must keep chosen/rejected pairs whole"),
        (DPO_PRESET, ["learner.max_tokens_per_micro_batch=64"],
         "learner.max_tokens_per_micro_batch=64 cuts micro-batches by length, which splits chosen/rejected pairs"),
        (DPO_PRESET, ["learner.mini_batch_size=48"],
         "learner.mini_batch_size=48 must divide data.prompts_per_step × 2 (samples per group of dpo) = 64"),
        (DPO_PRESET, ["algorithm.dpo_beta=1"], "unknown key 'algorithm.dpo_beta'; allowed under 'algorithm': beta, loss"),
        (ONLINE_DPO_PRESET, ["rollout.n=1"], "rollout.n=1: online DPO pairs the best and worst of a group"),
        (ONLINE_DPO_PRESET, ["algorithm.max_sampling_rounds=0"], "algorithm.max_sampling_rounds=0 must be >= 1"),
    ]:
        with pytest.raises(ConfigError) as info:
            configure(preset, overrides)
        assert message in str(info.value) and "\n" not in str(info.value)
    # max_sampling_rounds is online DPO's own option: offline DPO does not know it
    with pytest.raises(ConfigError, match="unknown key 'algorithm.max_sampling_rounds'"):
        configure(DPO_PRESET, ["algorithm.max_sampling_rounds=2"])


def test_shuffled_groups_keeps_groups_whole():
    order = shuffled_groups(torch.tensor([5, 5, 7, 7, 9, 9]), random.Random(0))
    assert sorted(order) == list(range(6))
    assert all(order[i] // 2 == order[i + 1] // 2 for i in range(0, 6, 2))


def test_preference_loading_errors(tmp_path):
    from rlcore.data import DataError, load_preferences

    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": "2+2=", "chosen": "4"}\n')
    with pytest.raises(DataError, match=r"p.jsonl line 2: expected a non-empty string in 'rejected'"):
        load_preferences([f])
