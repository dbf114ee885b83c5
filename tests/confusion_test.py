"""Confusion matrices, per-class metrics and most confused pairs, by hand."""

import numpy as np
import pytest

from lettercnn import confusion

NAMES = ('C', 'O', 'R')
# True C: 3 C, 2 O. True O: 1 C, 4 O. True R: none (the folder lacks it).
TRUE = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
PREDICTED = [0, 0, 0, 1, 1, 0, 1, 1, 1, 1]


def test_matrix_counts_true_rows_and_predicted_columns():
  counts = confusion.matrix(TRUE, PREDICTED, 3)

  np.testing.assert_array_equal(counts, [[3, 2, 0], [1, 4, 0], [0, 0, 0]])
  assert counts.dtype == np.int64
  assert confusion.accuracy(counts) == pytest.approx(0.7)
  shares = confusion.row_normalised(counts)
  np.testing.assert_allclose(shares[:2], [[0.6, 0.4, 0], [0.2, 0.8, 0]])
  assert np.isnan(shares[2]).all()  # A class without images has no shares.


def test_matrix_refuses_labels_of_different_lengths():
  with pytest.raises(ValueError, match='true labels but'):
    confusion.matrix([0, 1], [0], 2)


def test_per_class_precision_recall_and_digits_accuracy():
  c, o, r = confusion.per_class(confusion.matrix(TRUE, PREDICTED, 3), NAMES)

  assert (c.images, c.correct, c.predicted) == (5, 3, 4)
  assert c.precision == pytest.approx(3 / 4)
  assert c.recall == c.accuracy == pytest.approx(3 / 5)
  assert o.precision == pytest.approx(4 / 6)
  assert o.recall == pytest.approx(4 / 5)
  # A class with no images and no predictions has neither, not zero.
  assert (r.images, r.precision, r.recall, r.accuracy) == (0, None, None, None)


def test_most_confused_largest_count_first_each_direction_apart():
  counts = np.array([[5, 2, 1], [2, 8, 0], [3, 0, 1]])

  pairs = confusion.most_confused(counts, NAMES, limit=3)

  # R as C: 3; then the two pairs of 2, the larger share first (C as O is
  # 2 of C's 8, O as C 2 of O's 10).
  assert [(p.true_class, p.predicted_class, p.count) for p in pairs] == [
      ('R', 'C', 3), ('C', 'O', 2), ('O', 'C', 2)]
  assert pairs[0].share == pytest.approx(0.75)
  assert pairs[0].describe() == 'R as C: 3 (75.0% of R)'
  assert confusion.most_confused(np.eye(3, dtype=int), NAMES) == []


def test_record_round_trips_for_status_json():
  counts = confusion.matrix(TRUE, PREDICTED, 3)

  saved = confusion.record(counts, NAMES, step=40)

  assert saved['step'] == 40
  assert saved['per_class_accuracy'] == [pytest.approx(0.6),
                                         pytest.approx(0.8), None]
  assert saved['accuracy'] == pytest.approx(0.7)
  again, names = confusion.from_record(saved)
  np.testing.assert_array_equal(again, counts)
  assert names == list(NAMES)
  with pytest.raises(ValueError):
    confusion.from_record(dict(saved, class_names=['C', 'O']))


def test_pairs_table():
  pairs = confusion.most_confused(confusion.matrix(TRUE, PREDICTED, 3), NAMES)

  assert confusion.pairs_table(pairs)[2:] == ['| C | O | 2 | 40.0% |',
                                              '| O | C | 1 | 20.0% |']
