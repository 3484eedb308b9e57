"""Packing: documents kept whole, labels only inside a document, and no attention across documents."""

import torch

from tinythink.compress.data import Document, PackedData, pack
from tinythink.compress.losses import IGNORE

from tiny_models import tiny_model


def test_pack_keeps_documents_whole_and_labels_inside_them():
    docs = [Document([1, 2, 3]), Document([4, 5, 6, 7], [False, False, True, True]), Document([8, 9])]
    (tokens, numbers, labels), (tokens2, numbers2, labels2) = pack(docs, 8)
    assert tokens == [1, 2, 3, 4, 5, 6, 7, 0] and numbers == [0, 0, 0, 1, 1, 1, 1, 2]
    # 1->2, 2->3, nothing across the boundary, 5->6 and 6->7 trained (their targets are), padding ignored
    assert labels == [2, 3, IGNORE, IGNORE, 6, 7, IGNORE, IGNORE]
    assert tokens2[:2] == [8, 9] and labels2[:2] == [9, IGNORE] and set(numbers2[2:]) == {1}


def test_long_documents_are_cut_and_untrained_ones_dropped():
    docs = [Document(list(range(1, 12))), Document([5, 6, 7], [True, False, False])]
    seqs = pack(docs, 4)
    assert [s[0] for s in seqs] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 0]]


def test_documents_in_one_sequence_equal_each_alone():
    model = tiny_model().eval()
    a, b = [3, 14, 15, 92, 65], [35, 89, 79, 32]
    packed = torch.tensor([a + b])
    documents = torch.tensor([[0] * len(a) + [1] * len(b)])
    with torch.no_grad():
        together = model.logits(model.hidden(packed, documents))[0]
        alone = torch.cat([model(torch.tensor([a]))[0], model(torch.tensor([b]))[0]])
    assert (together - alone).abs().max() < 1e-5


def test_the_order_is_fixed_by_the_seed_and_runs_across_epochs():
    data = PackedData([([i, i], [0, 0], [i, IGNORE]) for i in range(5)], seed=3)
    again = PackedData([([i, i], [0, 0], [i, IGNORE]) for i in range(5)], seed=3)
    assert data.indices(0, 12) == again.indices(0, 12)
    assert sorted(data.indices(0, 5)) == list(range(5)) and sorted(data.indices(5, 5)) == list(range(5))
    assert data.indices(3, 4) == data.indices(0, 7)[3:]
