"""The sweep in TensorBoard's HParams dashboard, read by TensorBoard itself."""

import json
import pathlib

from clu import metric_writers
import pytest
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import hparams_plugin
from tensorboard.plugins.scalar import scalars_plugin
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

from configs import default
from lettercnn.run import events
from lettercnn.sweep import hparams as hparams_summary
from lettercnn.sweep import report

ALL_STATUSES = ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE',
                'STATUS_RUNNING']


def _make_run(sweep_dir: pathlib.Path, lr: float, seed: int,
              val_accuracy: float) -> None:
  """A finished run as lettercnn.train logs it: config hparams, scalars."""
  config = default.get_config()
  config.learning_rate, config.seed, config.num_epochs = lr, seed, 1
  run_dir = sweep_dir / f'lr_{lr:g},seed={seed}'
  writer = metric_writers.create_default_writer(str(run_dir))
  writer.write_hparams({k: events.logged_value(v)
                        for k, v in config.to_dict().items()})
  writer.write_scalars(4, {'val_accuracy': val_accuracy / 2,
                           'epoch_train_accuracy': 0.5})
  writer.write_scalars(8, {'val_accuracy': val_accuracy,
                           'epoch_train_accuracy': 0.9})
  writer.close()
  (run_dir / 'status.json').write_text(json.dumps({
      'status': 'converged', 'epoch': 1.0, 'num_epochs': 1,
      'steps_per_epoch': 8, 'num_classes': 10,
      'final': {'train_accuracy': 0.9, 'val_accuracy': val_accuracy},
      'best': {'val_accuracy': val_accuracy, 'epoch': 1},
      'config': json.loads(config.to_json())}))


def _hparams_client(logdir: pathlib.Path) -> werkzeug_test.Client:
  """TensorBoard's HParams plugin over `logdir`, as its server runs it."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(logdir))
  multiplexer.Reload()
  context = base_plugin.TBContext(
      logdir=str(logdir), multiplexer=multiplexer,
      data_provider=data_provider.MultiplexerDataProvider(multiplexer,
                                                          str(logdir)))
  context.plugin_name_to_instance = {
      'scalars': scalars_plugin.ScalarsPlugin(context)}
  routes = hparams_plugin.HParamsPlugin(context).get_plugin_apps()
  return werkzeug_test.Client(
      lambda environ, start: routes[environ['PATH_INFO']](environ, start),
      wrappers.Response)


def _post(client: werkzeug_test.Client, route: str, request: dict) -> dict:
  response = client.post(route, data=json.dumps(request),
                         content_type='application/json')
  assert response.status_code == 200, response.get_data(as_text=True)
  return json.loads(response.get_data())


@pytest.fixture
def sweep_dir(tmp_path) -> pathlib.Path:
  for lr, seed, val in ((1e-3, 0, 0.6), (1e-3, 1, 0.7), (1e-4, 0, 0.8),
                        (1e-4, 1, 0.9)):
    _make_run(tmp_path, lr, seed, val)
  assert report.main([str(tmp_path)]) == 0
  return tmp_path


def test_tensorboard_shows_the_swept_fields_and_the_metrics(sweep_dir):
  experiment = _post(_hparams_client(sweep_dir), '/experiment',
                     {'experimentName': ''})

  # TensorBoard sorts them by name.
  assert [h['name'] for h in experiment['hparamInfos']] == [
      'batch_size', 'learning_rate', 'seed']
  assert [m['name']['tag'] for m in experiment['metricInfos']] == [
      tag for tag, _ in hparams_summary.METRICS]


def test_tensorboard_lists_every_run_with_its_values(sweep_dir):
  groups = _post(_hparams_client(sweep_dir), '/session_groups', {
      'experimentName': '', 'allowedStatuses': ALL_STATUSES,
      'colParams': [{'metric': {'tag': 'val_accuracy'}}],
      'startIndex': 0, 'sliceSize': 100})

  sessions = {
      session['name']: (group['hparams']['learning_rate'],
                        group['hparams']['seed'],
                        {m['name']['tag']: m['value']
                         for m in session['metricValues']}['val_accuracy'])
      for group in groups['sessionGroups'] for session in group['sessions']}
  expected = {
      'lr_0.001,seed=0': (1e-3, 0, 0.6), 'lr_0.001,seed=1': (1e-3, 1, 0.7),
      'lr_0.0001,seed=0': (1e-4, 0, 0.8), 'lr_0.0001,seed=1': (1e-4, 1, 0.9)}
  assert sorted(sessions) == sorted(expected)
  for name, values in expected.items():
    assert sessions[name] == pytest.approx(values)


def test_a_second_report_replaces_the_experiment_file(sweep_dir):
  assert report.main([str(sweep_dir)]) == 0

  assert len(list(sweep_dir.glob(
      f'events.out.tfevents.*{hparams_summary.FILE_SUFFIX}'))) == 1
