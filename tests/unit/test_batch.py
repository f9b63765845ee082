import torch

from rlvr.trainer.batch import TrainSample, collate, num_micro_batches, shard_for_ranks, split_micro


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
