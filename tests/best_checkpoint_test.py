"""The best checkpoint: kept besides the latest ones; resuming ignores it."""

import os

import numpy as np
import pytest

from lettercnn.run import checkpoints as checkpointing
from lettercnn.classify import trained_model


def _snapshot(step: int) -> checkpointing.Snapshot:
  return checkpointing.Snapshot(
      step=step, arrays={'w': np.full(3, step, np.float32)},
      meta={'step': step})


def test_best_is_kept_apart_and_restore_latest_restores_the_newest(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  for step in range(1, 6):
    if step in (1, 4):  # New bests, saved before their step's checkpoint.
      checkpointer.save_best(_snapshot(step))
    checkpointer.save(_snapshot(step))
  checkpointer.save_best(_snapshot(4))  # Again after a resume: kept as is.
  checkpointer.close()

  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3', '4', '5']
  assert os.listdir(tmp_path / 'best_checkpoint') == ['4']
  resumed = checkpointing.Checkpointer(str(tmp_path)).restore_latest(
      {'w': np.zeros(3, np.float32)})
  assert resumed.step == 5
  reader = checkpointing.CheckpointReader(str(tmp_path))
  assert reader.steps() == [5, 4, 3]
  assert reader.best_step() == 4
  best = reader.read(4)
  assert best.meta == {'step': 4}
  np.testing.assert_array_equal(best.arrays['w'], [4, 4, 4])


def test_reader_reports_a_corrupt_checkpoint_and_moves_nothing(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save_best(_snapshot(7))
  checkpointer.close()
  for root, _, files in os.walk(tmp_path / 'best_checkpoint' / '7' / 'arrays'):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.write(b'\0' * 64)

  reader = checkpointing.CheckpointReader(str(tmp_path))
  with pytest.raises(checkpointing.CorruptCheckpoint,
                     match='the checkpoint at step 7 in .*best_checkpoint is '
                     'corrupt'):
    reader.read(7)
  assert os.listdir(tmp_path / 'best_checkpoint') == ['7']
  assert not (tmp_path / 'corrupt_checkpoints').exists()


def test_training_keeps_its_best_epoch_after_the_latest_moved_on(
    tiny_config, tmp_path, monkeypatch):
  """Validation accuracy peaks at epoch 1 of 3; one latest checkpoint kept."""
  from lettercnn import train  # pylint: disable=g-import-not-at-top
  accuracies = iter([0.9, 0.5, 0.7])
  monkeypatch.setattr(train, 'evaluate', lambda *args: {
      'loss': 1.0, 'accuracy': next(accuracies)})
  monkeypatch.setattr(checkpointing, 'MAX_TO_KEEP', 1)
  tiny_config.num_epochs = 3
  tiny_config.batch_size = 2
  workdir = str(tmp_path)

  status = train.train_and_evaluate(tiny_config, workdir)

  steps_per_epoch = status['steps_per_epoch']
  assert status['best'] == {'val_accuracy': 0.9, 'epoch': 1,
                            'step': steps_per_epoch}
  assert os.listdir(tmp_path / 'checkpoints') == [str(3 * steps_per_epoch)]
  assert os.listdir(tmp_path / 'best_checkpoint') == [str(steps_per_epoch)]
  best = trained_model.load(workdir, 'best')
  last = trained_model.load(workdir, 'last')
  assert (best.step, last.step) == (steps_per_epoch, 3 * steps_per_epoch)
  assert best.meta['best'] == status['best']
  assert not np.array_equal(best.params['Dense_1']['kernel'],
                            last.params['Dense_1']['kernel'])
  assert trained_model.load(workdir, str(steps_per_epoch)).step == (
      steps_per_epoch)
