"""lettercnn.classify on a tiny real run, its validation split and bad input."""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

from conftest import REPO_ROOT
import numpy as np
from PIL import Image
import pytest

from lettercnn.classify import classify
from lettercnn.classify import inputs as classify_inputs
from lettercnn import errors
from lettercnn.run import checkpoints as checkpointing
from lettercnn.classify import export as export_split
from lettercnn.data import input_pipeline
from lettercnn.run import inputs as run_inputs
from lettercnn.run import events as tb_events

NUM_VALIDATION = 20  # 2 of each of the 10 letters.


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: pathlib.Path
  status: dict
  validation: pathlib.Path  # Its validation split as a labelled folder.


def _tiny_config(data_dir: str):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data_dir = data_dir
  config.examples_per_class = 8  # 60 training and 20 validation images.
  config.num_epochs = 2
  config.batch_size = 2
  config.log_every_steps = 10
  config.eval_batch_size = 16  # The last validation batch is padded.
  config.mean_subtraction = 'image'
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory, data_dir) -> Run:
  from lettercnn import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('classify')
  workdir = root / 'run'
  status = train.train_and_evaluate(_tiny_config(data_dir), str(workdir))
  assert export_split.export(str(workdir), str(root / 'validation')) == (
      NUM_VALIDATION)
  return Run(workdir, status, root / 'validation')


def _tree(root: pathlib.Path) -> dict[str, tuple]:
  """Every file and folder below `root`: its mode, mtime and content hash."""
  entries = {}
  for path in sorted(root.rglob('*')):
    stat = path.lstat()
    content = (hashlib.sha256(path.read_bytes()).hexdigest()
               if path.is_file() else None)
    entries[str(path.relative_to(root))] = (stat.st_mode, stat.st_size,
                                            stat.st_mtime_ns, content)
  return entries


def _copy_validation(run: Run, target: pathlib.Path,
                     classes=None) -> pathlib.Path:
  shutil.copytree(run.validation, target, ignore=None if classes is None else (
      lambda folder, names: [n for n in names if folder == str(run.validation)
                             and n not in classes]))
  return target


def test_validation_split_classifies_exactly_as_training_evaluated(
    run, tmp_path):
  status = run.status

  last, out = classify.classify(str(run.workdir), [str(run.validation)],
                                out=str(tmp_path / 'last'))
  best, _ = classify.classify(str(run.workdir), [str(run.validation)],
                              checkpoint='best', out=str(tmp_path / 'best'))

  assert len(last.labelled) == NUM_VALIDATION
  assert last.trained.step == status['step']
  # The whole confusion matrix that training's own evaluation recorded.
  np.testing.assert_array_equal(last.counts(),
                                status['val_confusion']['matrix'])
  correct = int(np.trace(last.counts()))
  assert correct / NUM_VALIDATION == pytest.approx(
      status['final']['val_accuracy'], abs=1e-6)
  assert best.trained.step == status['best']['step']
  assert np.trace(best.counts()) / NUM_VALIDATION == pytest.approx(
      status['best']['val_accuracy'], abs=1e-6)
  assert sorted(os.listdir(out)) == [
      'classify.md', 'confusion_matrix.csv', 'confusion_matrix.png',
      'mistakes.png', 'per_class.csv', 'predictions.csv', 'predictions.json']
  saved = json.loads((out / 'predictions.json').read_text())
  assert saved['metrics']['top_1_accuracy'] == correct / NUM_VALIDATION
  assert len(saved['images']) == NUM_VALIDATION
  assert len(saved['images'][0]['classes']) == 5
  assert f'({correct} of {NUM_VALIDATION})' in (out / 'classify.md').read_text()


def _folder_dataset(root: pathlib.Path) -> pathlib.Path:
  """Three classes of images in mixed sizes and modes (grey, RGBA, 16-bit)."""
  rng = np.random.default_rng(0)
  for c, name in enumerate(('cat', 'cow', 'owl')):
    (root / name).mkdir(parents=True)
    for i in range(4):
      pixels = rng.integers(0, 256, (20 + 7 * i, 30, 4), np.uint8)
      pixels[..., c] = 255
      image = Image.fromarray(pixels, 'RGBA')
      if i == 1:
        image = image.convert('L')
      elif i == 2:
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
      image.save(root / name / f'{i}.png')
  return root


@pytest.mark.parametrize('source, mean_subtraction, grayscale', [
    ('tombstone_letters', 'image', True),
    ('folder', 'pixel', False),
])
def test_model_input_is_training_input_bit_for_bit(
    tiny_config, tmp_path, source, mean_subtraction, grayscale):
  config = tiny_config
  if source == 'folder':
    config.dataset = str(_folder_dataset(tmp_path / 'animals'))
    config.image_size = 16
  config.mean_subtraction = mean_subtraction
  config.grayscale = grayscale
  pipeline = input_pipeline.Pipeline(config, num_devices=1)
  exported = tmp_path / 'validation'
  input_pipeline.load_splits(config, lambda splits: export_split.write_split(
      splits, 'validation', str(exported)))
  inputs = run_inputs.RunInputs(
      class_names=pipeline.splits.class_names,
      source=run_inputs.FOLDER if source == 'folder' else run_inputs.TFDS,
      image_size=config.image_size, grayscale=grayscale, mean=pipeline.mean)

  images = classify_inputs.list_images([str(exported)], inputs.class_names)
  pixels, skipped = classify_inputs.decode(images, inputs, skip_bad=False)
  model_input = classify_inputs.model_input(pixels, inputs)

  evaluated = np.concatenate([batch['image'][batch['mask']]
                              for batch in pipeline.validation_batches(7)])
  # export_split numbers the files in the split's order, from 1.
  order = [int(pathlib.Path(image.path).stem.split('_')[1]) - 1
           for image in images]
  assert skipped == 0 and sorted(order) == list(range(len(evaluated)))
  assert model_input.dtype == evaluated.dtype == np.float32
  np.testing.assert_array_equal(model_input, evaluated[order])
  labels = np.concatenate([batch['label'][batch['mask']]
                           for batch in pipeline.validation_batches(7)])
  assert [image.true_class for image in images] == [
      inputs.class_names[labels[i]] for i in order]


def test_workdir_is_left_exactly_as_it_was(run, tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  shutil.copytree(run.workdir, workdir)
  # A save in progress (orbax's temporary folder): a writer would clean it up.
  (workdir / 'checkpoints' / '90.orbax-checkpoint-tmp-1').mkdir()
  before = _tree(workdir)
  monkeypatch.chdir(tmp_path)  # For the default --out.

  for checkpoint in ('last', 'best'):
    _, out = classify.classify(str(workdir), [str(run.validation)],
                               checkpoint=checkpoint)
    assert out.parent == pathlib.Path('classified')
  with pytest.raises(errors.InputError, match='is inside the workdir'):
    classify.classify(str(workdir), [str(run.validation)],
                      out=str(workdir / 'results'))

  assert _tree(workdir) == before


def test_unknown_class_folder_is_one_line_before_any_decoding(
    run, tmp_path, monkeypatch):
  folder = _copy_validation(run, tmp_path / 'letters')
  (folder / 'Z').mkdir()
  shutil.copy(next((folder / 'A').iterdir()), folder / 'Z' / 'z.png')
  (folder / 'lowercase_a').mkdir()
  shutil.copy(next((folder / 'A').iterdir()), folder / 'lowercase_a' / 'a.png')
  monkeypatch.setattr(classify_inputs, 'decode', lambda *args: pytest.fail(
      'decoded images despite the unknown classes'))

  with pytest.raises(errors.InputError) as raised:
    classify.classify(str(run.workdir), [str(folder)],
                      out=str(tmp_path / 'out'))

  assert str(raised.value).startswith(
      f'class folder(s) Z, lowercase_a under {folder} are not classes of this '
      'model, which knows A, B, C, E, H, N, O, R, S, T')
  assert '\n' not in str(raised.value)
  assert not (tmp_path / 'out').exists()


def test_classes_missing_from_the_folder_are_fine(run, tmp_path):
  folder = _copy_validation(run, tmp_path / 'letters', classes=('C', 'O'))

  result, out = classify.classify(str(run.workdir), [str(folder)],
                                  out=str(tmp_path / 'out'))

  counts = result.counts()
  assert len(result.labelled) == 4 and counts.sum() == 4
  assert counts.shape == (10, 10)
  absent = [i for i, name in enumerate(result.trained.class_names)
            if name not in ('C', 'O')]
  assert counts[absent].sum() == 0
  per_class = (out / 'per_class.csv').read_text().splitlines()
  assert per_class[0] == ('class,images,correct,predicted,precision,recall,'
                          'accuracy')
  assert per_class[1].startswith('A,0,0,')  # No images: no recall.
  assert per_class[1].endswith(',,')


def test_unreadable_image_is_named_unless_skip_bad(run, tmp_path):
  folder = _copy_validation(run, tmp_path / 'letters')
  broken = folder / 'B' / 'broken.png'
  broken.write_bytes(b'\x89PNG\r\n\x1a\n' + b'not really' * 10)

  with pytest.raises(errors.InputError) as raised:
    classify.classify(str(run.workdir), [str(folder)],
                      out=str(tmp_path / 'stopped'))
  result, out = classify.classify(str(run.workdir), [str(folder)],
                                  out=str(tmp_path / 'skipped'),
                                  skip_bad=True)

  message = str(raised.value)
  assert message.startswith(f'Corrupt or unreadable image {broken} (')
  assert message.endswith('or pass --skip_bad to skip such images.')
  assert '\n' not in message
  assert not (tmp_path / 'stopped').exists()
  assert result.skipped == (str(broken),)
  assert len(result.predictions) == NUM_VALIDATION
  saved = json.loads((out / 'predictions.json').read_text())
  assert saved['skipped_unreadable'] == [str(broken)]
  assert 'Skipped 1 unreadable image(s)' in classify.classify_report.printed(
      result, max_rows=0)


def _set_model(workdir: pathlib.Path, step: int, model: str) -> None:
  """Rewrites the model name saved in a checkpoint's metadata, and its
  SHA-256 with it, as a checkpoint of that model would hold them."""
  path = workdir / 'checkpoints' / str(step) / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  meta['config']['model'] = model
  meta['meta_sha256'] = checkpointing.meta_digest(meta)
  path.write_text(json.dumps(meta))


def test_bad_workdirs_and_checkpoints_are_one_line_each(run, tmp_path):
  status, workdir = run.status, str(run.workdir)
  steps_per_epoch = status['steps_per_epoch']
  unknown_model = tmp_path / 'vgg_run'
  shutil.copytree(run.workdir, unknown_model)
  _set_model(unknown_model, status['step'], 'vgg')
  (tmp_path / 'empty_run').mkdir()
  best = status['best']['step']
  cases = [
      (workdir, '12', f'workdir {workdir} has no checkpoint at step 12; it '
       f'has steps {steps_per_epoch}, {2 * steps_per_epoch} and {best} '
       '(best)'),
      (workdir, 'newest', "--checkpoint='newest' is not best, last or a step"),
      (str(tmp_path / 'nowhere'), 'last', f'workdir {tmp_path / "nowhere"} '
       'does not exist'),
      (str(tmp_path / 'empty_run'), 'best', f'workdir {tmp_path / "empty_run"}'
       ' has no checkpoint (nothing in'),
      (str(unknown_model), 'last', f'the run in {unknown_model} was trained '
       "with model 'vgg', which this lettercnn does not have (alexnet, lenet, "
       'lenet_tf)'),
  ]
  for workdir, checkpoint, message in cases:
    with pytest.raises(errors.InputError) as raised:
      classify.classify(workdir, [str(run.validation)], checkpoint=checkpoint,
                        out=str(tmp_path / 'out'))
    assert str(raised.value).startswith(message)
    assert '\n' not in str(raised.value)
  assert not (tmp_path / 'out').exists()


def test_training_recorded_the_confusion_in_status_and_tensorboard(run):
  saved = run.status['val_confusion']
  counts = np.array(saved['matrix'])

  assert counts.sum() == NUM_VALIDATION
  assert saved['step'] == run.status['step']
  assert saved['class_names'] == list('ABCEHNORST')
  assert saved['accuracy'] == pytest.approx(
      run.status['final']['val_accuracy'], abs=1e-6)
  assert saved['per_class_accuracy'] == pytest.approx(
      (np.diag(counts) / counts.sum(axis=1)).tolist())
  images = tb_events.read_images(str(run.workdir))
  assert list(images) == ['val_confusion_matrix']
  [(step, png)] = images['val_confusion_matrix']
  assert step == run.status['step']
  assert png.startswith(b'\x89PNG')


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'lettercnn.classify', *args],
                        cwd=REPO_ROOT, capture_output=True, text=True,
                        check=False)


def test_command_line_table_and_error_line(run, tmp_path):
  image = next((run.validation / 'O').iterdir())

  done = _cli(f'--workdir={run.workdir}', str(image), '--top_k=3',
              f'--out={tmp_path / "out"}')
  failed = _cli(f'--workdir={run.workdir}', str(image), '--checkpoint=7')

  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.splitlines()
  assert lines[0] == (f'{run.workdir}: the last checkpoint (step '
                      f'{run.status["step"]}, epoch 2)')
  assert lines[1].split() == ['image', 'top', '1', 'top', '2', 'top', '3']
  assert lines[2].startswith(str(image))
  assert len(lines[2].split()) == 7  # The path, then 3 x class, probability.
  assert lines[-1] == f'Results in {tmp_path / "out"}'
  assert failed.returncode == 2
  # Only TensorFlow's start-up lines besides it (it loads on import).
  assert [l for l in failed.stderr.splitlines()
          if 'error' in l and 'oneDNN' not in l] == [
      f'classify: error: workdir {run.workdir} has no checkpoint at step 7; '
      f'it has steps 30, 60 and {run.status["best"]["step"]} (best)']
