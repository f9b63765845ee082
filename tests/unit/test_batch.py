import pytest
import torch

from rlvr.trainer.batch import collate, collate_shared, num_micro_batches, shard_for_ranks, split_micro
from rlvr.types import TrainSample


def test_collate_aligns_completions_at_one_column():
    a = TrainSample([5, 6, 7], [8, 9], 1.0, [-0.1, -0.2])
    b = TrainSample([5], [4, 3, 2], -1.0, [-0.3, -0.4, -0.5])
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [0, 0, 5, 4, 3, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    # positions count real tokens only, so left padding does not shift them
    assert batch["position_ids"].tolist()[1] == [0, 0, 0, 1, 2, 3]
    assert batch["targets"].tolist() == [[8, 9, 0], [4, 3, 2]]
    assert batch["completion_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert int(batch["prompt_len"]) == 3
    assert torch.allclose(batch["rollout_logprobs"][1], torch.tensor([-0.3, -0.4, -0.5]))


def test_sharding_keeps_every_sample_once_and_ranks_in_step():
    items = list(range(13))
    shards = shard_for_ranks(items, 2)
    assert sorted(shards[0] + shards[1]) == items
    assert num_micro_batches(shards, 3) == 3
    chunks = split_micro(shards[1], 3)
    assert len(chunks) == 3 and sum(chunks, []) == shards[1]
    assert split_micro([1], 3) == [[1], [], []]


def _tiny_qwen3():
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, max_position_embeddings=128)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")


def _completion_logprobs(model, batch):
    from rlvr.trainer.worker import shared_prompt_logits

    if "prompt_row" in batch:
        logits = shared_prompt_logits(model, batch, torch.device("cpu"))
    else:
        T = batch["targets"].shape[1]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], logits_to_keep=T + 1).logits[:, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)


def test_shared_prompt_layout_gives_the_same_logprobs_and_gradients_as_the_plain_one():
    """Running each prompt once and its completions on top of its KV cache is an exact
    re-layout: same per-token log-probs and the same gradient of a masked loss, with
    prompts of different lengths (left padding), completions of different lengths (right
    padding) and a prompt that comes back after another (a second row)."""
    from rlvr.trainer.batch import collate_shared

    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(3, 50, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = rand(5), rand(9)
    shape = [(p1, 4, 1.0), (p1, 6, -1.0), (p1, 2, 0.5), (p2, 6, 0.3), (p2, 5, -0.2), (p2, 1, 2.0), (p1, 3, 1.5)]
    samples = [TrainSample(p, rand(c), a, [-1.0] * c) for p, c, a in shape]
    shared = collate_shared(samples, pad_id=0)
    plain = collate(samples, pad_id=0)
    assert shared is not None and shared["prompt_ids"].shape == (3, 9)  # p1, p2, p1 again
    assert shared["prompt_row"].tolist() == [0, 0, 0, 1, 1, 1, 2]
    for key in ("targets", "completion_mask", "advantages", "rollout_logprobs"):
        assert torch.equal(shared[key], plain[key]), key

    model = _tiny_qwen3()
    results = []
    for batch in (plain, shared):
        model.zero_grad()
        logp = _completion_logprobs(model, batch)
        mask = batch["completion_mask"]
        (-(logp * mask * batch["advantages"]).sum() / mask.sum()).backward()
        results.append((logp.detach() * mask, torch.cat([p.grad.reshape(-1) for p in model.parameters()])))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


def test_shared_layout_falls_back_when_nothing_is_shared():
    from rlvr.trainer.batch import collate_shared

    distinct = [TrainSample([i, i + 1], [4, 5], 0.0, [-1.0, -1.0]) for i in range(3, 6)]
    assert collate_shared(distinct, pad_id=0) is None  # every prompt once: the plain layout
    same = [TrainSample([3, 4], [4, 5, 6], 0.0, [-1.0] * 3)] * 2
    assert collate_shared(same, pad_id=0)["prompt_ids"].shape == (1, 2)


def _sized(*lengths):
    """Samples whose prompt + completion lengths are `lengths` (prompt 1 token)."""
    from rlvr.types import TrainSample

    return [TrainSample([7], [5] * (n - 1), 0.0, [0.0] * (n - 1)) for n in lengths]


def test_pack_by_tokens_by_hand():
    from rlvr.trainer.batch import pack_by_tokens, padded_tokens

    samples = _sized(4, 4, 10, 2, 2, 2, 2)
    chunks = pack_by_tokens(samples, 12)
    # [4, 4] = 2 x 4 = 8 (adding 10 -> 3 x 10 = 30 > 12); [10] = 10 (adding 2 -> 2 x 10 = 20);
    # [2, 2, 2, 2] = 4 x 2 = 8 <= 12
    assert [[len(s.prompt_ids) + len(s.completion_ids) for s in c] for c in chunks] == [[4, 4], [10], [2, 2, 2, 2]]
    assert [padded_tokens(c) for c in chunks] == [8, 10, 8]
    assert [s for c in chunks for s in c] == samples  # contiguous, in order, each once
    assert pack_by_tokens(_sized(20, 3), 12) == [_sized(20, 3)[:1], _sized(20, 3)[1:]]  # too long: alone


def test_split_by_tokens_gives_exactly_count_chunks_with_the_smallest_largest_one():
    import itertools

    from rlvr.trainer.batch import padded_tokens, split_by_tokens

    samples = _sized(9, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3)
    chunks = split_by_tokens(samples, 3)
    assert len(chunks) == 3 and [s for c in chunks for s in c] == samples
    best = min(max(padded_tokens(samples[:i]), padded_tokens(samples[i:j]), padded_tokens(samples[j:]))
               for i, j in itertools.combinations(range(1, len(samples)), 2))  # every contiguous 3-way split
    assert max(padded_tokens(c) for c in chunks) == best
    # a count split by samples (4, 4, 3) would put the 9-token one with three others: 4 x 9 = 36
    assert best < 36
    assert split_by_tokens(samples[:2], 4)[2:] == [[], []]  # fewer samples than micro-batches: empty ones last
    assert split_by_tokens([], 2) == [[], []]


def test_token_budget_sets_the_micro_batch_count_of_the_rank_that_needs_most():
    from rlvr.trainer.batch import num_micro_batches

    shards = [_sized(4, 4, 4, 4), _sized(10, 10, 2)]
    assert num_micro_batches(shards, micro_batch_size=64) == 1
    # rank 0: [4, 4, 4] (3 x 4 = 12) + [4]: 2; rank 1: [10] + [10] (2 x 10 = 20 > 12) + [2]: 3
    assert num_micro_batches(shards, micro_batch_size=64, max_tokens=12) == 3


def test_packed_token_budget_counts_real_tokens():
    import itertools

    from rlvr.trainer.batch import micro_tokens, num_micro_batches, pack_by_tokens, split_by_tokens

    samples = _sized(4, 4, 10, 2, 2, 2, 2)
    chunks = pack_by_tokens(samples, 12, packed=True)
    # [4, 4] = 8 (adding 10 -> 18 > 12); [10, 2] = 12 (adding 2 -> 14); [2, 2, 2] = 6
    assert [[len(s.prompt_ids) + len(s.completion_ids) for s in c] for c in chunks] == [[4, 4], [10, 2], [2, 2, 2]]
    assert [micro_tokens(c, packed=True) for c in chunks] == [8, 12, 6]
    assert [s for c in chunks for s in c] == samples
    assert pack_by_tokens(_sized(20, 3), 12, packed=True) == [_sized(20, 3)[:1], _sized(20, 3)[1:]]
    many = _sized(9, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3)
    split = split_by_tokens(many, 3, packed=True)
    best = min(max(micro_tokens(many[:i], True), micro_tokens(many[i:j], True), micro_tokens(many[j:], True))
               for i, j in itertools.combinations(range(1, len(many)), 2))
    assert [s for c in split for s in c] == many and max(micro_tokens(c, True) for c in split) == best == 9
    # rank 1: [10] + [10, 2] (12 real tokens; padded it would be 3 x 10): 2 micro-batches, rank 0 [4, 4, 4] + [4]: 2
    assert num_micro_batches([_sized(4, 4, 4, 4), _sized(10, 10, 2)], 64, max_tokens=12, packed=True) == 2


def test_token_advantages_and_critic_targets_collate_per_token():
    # a sample without token advantages broadcasts its scalar over its completion; one with them keeps them;
    # padding is 0; the critic's returns / old values appear only when a sample carries them
    a = TrainSample([5, 6], [7, 8, 9], 0.5, [-1.0] * 3)
    b = TrainSample([5, 6], [7, 8], 0.0, [-1.0] * 2, token_advantages=[1.0, -2.0], returns=[0.3, 0.4],
                    values=[0.1, 0.2])
    plain, shared = collate([a, b], pad_id=0), collate_shared([a, b], pad_id=0)
    for batch in (plain, shared):
        assert batch["advantages"].tolist() == [[0.5, 0.5, 0.5], [1.0, -2.0, 0.0]]
        assert batch["returns"].flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 0.3, 0.4, 0.0])
        assert batch["old_values"].flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.0])
    assert "returns" not in collate([a], pad_id=0)
