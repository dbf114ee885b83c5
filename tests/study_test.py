"""lettercnn.study: the rung decisions, a killed study's resume, exact promotion."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT
from lettercnn.study import halving
from lettercnn.study import rates as study_rates
import run_helpers

CHANCE, MARGIN = 0.1, 5.0


def trial(rate, accuracies, status='running', seed=0):
  return halving.Trial(study_rates.run_name(rate, seed), rate, seed,
                       tuple(accuracies), status)


# --- The decisions, on synthetic curves ----------------------------------------


def test_rungs_at_fractions_of_the_run():
  assert halving.rung_epochs(30, 3, 13) == [3, 10, 30]
  assert halving.rung_epochs(30, 3, 9) == [3, 10, 30]
  assert halving.rung_epochs(30, 3, 8) == [10, 30]
  assert halving.rung_epochs(4, 2, 5) == [1, 2, 4]
  assert halving.rung_epochs(2, 3, 3) == [1, 2]
  assert halving.rung_epochs(30, 3, 13, num_rungs=1) == [30]


def _search_trials(epochs):
  """Ten rates: the three highest fail three ways, the rest rise with rate
  (1e-4 best) and are trained through `epochs`."""
  curves = {
      3e-7: [0.20, 0.25, 0.30], 1e-6: [0.30, 0.40, 0.45], 3e-6: [0.50, 0.55, 0.60],
      1e-5: [0.60, 0.65, 0.70], 3e-5: [0.70, 0.75, 0.80],
      1e-4: [0.80, 0.85, 0.90], 3e-4: [0.75, 0.80, 0.85],
  }
  trials = [trial(rate, curve[:epochs]) for rate, curve in curves.items()]
  trials.append(trial(1e-3, [0.88, 0.11, 0.10][:epochs]))  # Collapses.
  trials.append(trial(3e-3, [0.12, 0.14, 0.13][:epochs]))  # At chance.
  trials.append(trial(1e-2, [], status='diverged'))
  return trials


def test_every_run_trains_to_the_first_rung_first():
  plan = halving.successive_halving(_search_trials(2), [3, 9], 3, CHANCE,
                                    MARGIN)
  # The diverged run is done; the other nine go on to epoch 3.
  assert plan.train == {t.name: 3 for t in _search_trials(2)
                        if t.rate != 1e-2}
  assert not plan.rungs


def test_rung_keeps_the_best_third_and_drops_failures_whatever_their_rank():
  plan = halving.successive_halving(_search_trials(3), [3, 9], 3, CHANCE,
                                    MARGIN)
  (rung,) = plan.rungs
  # The collapsed run's best (88%) would rank second: it leaves anyway.
  assert set(rung.failed) == {'lr_1.00e-03', 'lr_3.00e-03', 'lr_1.00e-02'}
  assert 'lr_1.00e-03' not in rung.ranked
  assert rung.ranked[:3] == ('lr_1.00e-04', 'lr_3.00e-04', 'lr_3.00e-05')
  # floor(10 / 3) = 3 of the ten that entered go on, to the end.
  assert rung.promoted == ('lr_1.00e-04', 'lr_3.00e-04', 'lr_3.00e-05')
  assert plan.train == {'lr_1.00e-04': None, 'lr_3.00e-04': None,
                        'lr_3.00e-05': None}


def test_ties_go_to_the_lower_rate():
  trials = [trial(1e-4, [0.5]), trial(1e-3, [0.5]), trial(1e-2, [0.4])]
  plan = halving.successive_halving(trials, [1, 3], 3, CHANCE, MARGIN)
  assert plan.rungs[0].promoted == ('lr_1.00e-04',)
  trials = [trial(1e-4, [0.5]), trial(1e-3, [0.51]), trial(1e-2, [0.4])]
  plan = halving.successive_halving(trials, [1, 3], 3, CHANCE, MARGIN)
  assert plan.rungs[0].promoted == ('lr_1.00e-03',)


@pytest.mark.parametrize('points_above_chance,failed', [
    (4.9, True), (5.1, False)])
def test_at_chance_is_the_not_converged_margin(points_above_chance, failed):
  accuracy = CHANCE + points_above_chance / 100
  assert trial(1e-3, [0.8, accuracy, accuracy]).failed(
      3, CHANCE, MARGIN) == failed


def test_at_chance_means_staying_there():
  # One epoch at chance, then back: not failed; two in a row: failed.
  assert not trial(1e-3, [0.8, 0.1, 0.7]).failed(3, CHANCE, MARGIN)
  assert not trial(1e-3, [0.8, 0.7, 0.1]).failed(3, CHANCE, MARGIN)
  assert trial(1e-3, [0.8, 0.1, 0.1]).failed(3, CHANCE, MARGIN)
  # Judged at the rung's epoch, not at the run's latest.
  assert not trial(1e-3, [0.8, 0.7, 0.1, 0.1]).failed(2, CHANCE, MARGIN)
  # Diverged in epoch 3: failed from the rung at epoch 3 on, not before.
  diverged = trial(1e-3, [0.5, 0.6], status='diverged')
  assert not diverged.failed(2, CHANCE, MARGIN)
  assert diverged.failed(3, CHANCE, MARGIN)


def _finished_search():
  """Three rates, one rung at epoch 1 then the end (epoch 3); 1e-4 won and
  trained to the end; 3e-4 was pruned at 60%; 1e-2 diverged."""
  return [trial(1e-4, [0.7, 0.8, 0.9], status='converged'),
          trial(3e-4, [0.6]), trial(1e-2, [], status='diverged')]


def test_confirmation_seeds_the_best_and_trains_the_edge_to_the_end():
  plan = halving.study_plan(_finished_search(), [1, 3], 3, 3, CHANCE, MARGIN)
  assert plan.stage == halving.CONFIRM and plan.best == 'lr_1.00e-04'
  # Seeds 1 and 2 of the best, and 3e-4, just below the failure, to the end.
  assert plan.train == {'lr_1.00e-04,seed=1': None,
                        'lr_1.00e-04,seed=2': None, 'lr_3.00e-04': None}
  assert plan.new == {'lr_1.00e-04,seed=1': (1e-4, 1),
                      'lr_1.00e-04,seed=2': (1e-4, 2)}
  assert plan.smallest_failed_rate == 1e-2
  assert plan.largest_converged_rate is None


def _seeds(first_epoch_accuracies):
  return [trial(1e-4, [a, 0.85, 0.88], status='converged', seed=s)
          for s, a in enumerate(first_epoch_accuracies, start=1)]


@pytest.mark.parametrize('seed_accuracies,runner_up_confirmed', [
    ((0.61, 0.65), False),   # 3e-4's 60% lies below every seed: separated.
    ((0.60, 0.65), True),    # One seed at 60%: the spread cannot separate.
    ((0.55, 0.65), True)])
def test_runner_up_is_confirmed_when_the_seeds_cannot_separate_them(
    seed_accuracies, runner_up_confirmed):
  trials = _finished_search() + _seeds(seed_accuracies)
  trials[1] = trial(3e-4, [0.6, 0.7, 0.8], status='converged')  # Edge done.
  plan = halving.study_plan(trials, [1, 3], 3, 3, CHANCE, MARGIN)
  assert plan.runner_up == 'lr_3.00e-04'
  expected = {'lr_3.00e-04,seed=1', 'lr_3.00e-04,seed=2'}
  assert (set(plan.train) == expected) == runner_up_confirmed
  assert plan.done != runner_up_confirmed


@pytest.mark.parametrize('edge_accuracy,confirmed', [(0.879, False),
                                                      (0.88, True)])
def test_a_run_trained_to_the_end_for_the_edge_joins_the_comparison(
    edge_accuracy, confirmed):
  # 3e-4 ranked below the runner-up 1e-5 at the rung, but trained to the end
  # for the edge; the best's seeds reach 88-90% there.
  trials = [trial(1e-5, [0.4]), trial(1e-4, [0.7, 0.8, 0.9], 'converged'),
            trial(3e-4, [0.3, 0.5, edge_accuracy], 'converged'),
            trial(1e-2, [], status='diverged')] + _seeds((0.65, 0.66))
  plan = halving.study_plan(trials, [1, 3], 3, 3, CHANCE, MARGIN)
  assert plan.runner_up == 'lr_1.00e-05'
  expected = {'lr_3.00e-04,seed=1', 'lr_3.00e-04,seed=2'}
  assert (set(plan.train) == expected) == confirmed
  assert plan.done != confirmed


def test_answer_once_every_run_is_in():
  trials = _finished_search() + _seeds((0.65, 0.66))
  trials[1] = trial(3e-4, [0.6, 0.7, 0.8], status='converged')
  plan = halving.study_plan(trials, [1, 3], 3, 3, CHANCE, MARGIN)
  assert plan.done
  assert plan.best_rate == 1e-4 and plan.confirmed == [0.9, 0.88, 0.88]
  assert plan.largest_converged_rate == 3e-4
  assert plan.smallest_failed_rate == 1e-2


def test_the_edge_moves_down_when_its_run_fails_late():
  trials = _finished_search() + _seeds((0.65, 0.66))
  # 3e-4, trained to the end, collapsed to chance after its rung.
  trials[1] = trial(3e-4, [0.6, 0.1, 0.1], status='not_converged')
  plan = halving.study_plan(trials, [1, 3], 3, 3, CHANCE, MARGIN)
  assert plan.smallest_failed_rate == 3e-4
  assert plan.largest_converged_rate == 1e-4
  assert plan.done


def test_the_grid_is_a_shared_lattice_within_float32():
  assert study_rates.log_grid(2.0e-4, 2, 3) == [
      2.15e-6, 4.64e-6, 1e-5, 2.15e-5, 4.64e-5, 1e-4, 2.15e-4, 4.64e-4, 1e-3,
      2.15e-3, 4.64e-3, 1e-2, 2.15e-2]
  with pytest.raises(ValueError, match='not a positive float32'):
    study_rates.log_grid(1e-36, 2, 3)
  with pytest.raises(ValueError, match='holds no rates'):
    study_rates.check_rates([], '--rates')


# --- A real study: killed, rerun; a promoted run is the full run -------------

_TINY = ['--config.examples_per_class=40', '--config.num_epochs=2',
         '--config.batch_size=2', '--config.log_every_steps=70',
         '--config.eval_batch_size=50']
# 10 diverges at once; 1e-3 and 3e-3 train. One rung at epoch 1.
_RATES = '--rates=1e-3,3e-3,10'


def _study(workdir, data_dir, *extra):
  return [sys.executable, '-m', 'lettercnn.study', '--config=configs/default.py',
          f'--workdir={workdir}', _RATES, '--seeds=1',
          f'--config.data_dir={data_dir}', *_TINY, *extra]


def _launches(run_dir):
  """The run's log.txt, one item a launch (each starts with its command)."""
  with open(os.path.join(run_dir, 'log.txt')) as f:
    return ('\n' + f.read()).split('\n=== ')[1:]


@pytest.fixture(scope='module')
def killed_study(tmp_path_factory, data_dir):
  """A study SIGTERMed as its promoted run starts past the rung, then rerun
  to the end: (workdir, the first output and exit status, the rerun's)."""
  workdir = str(tmp_path_factory.mktemp('study') / 'study')
  first = subprocess.Popen(_study(workdir, data_dir), cwd=REPO_ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
  output = []
  for line in first.stdout:
    output.append(line)
    if 'started' in line and any('search: 1 run(s) to end' in earlier
                                 for earlier in output):
      break
  time.sleep(1)
  first.send_signal(signal.SIGTERM)
  output.append(first.communicate(timeout=120)[0])
  rerun = subprocess.run(_study(workdir, data_dir), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
  return workdir, ''.join(output), first.returncode, rerun.stdout


def test_a_killed_study_resumes_without_retraining_finished_rungs(
    killed_study):
  workdir, first, first_code, rerun = killed_study
  assert first_code == 130, first[-2000:]
  assert 'search: 3 run(s) to epoch 1' in first
  # The rerun trains nothing of the first rung again...
  assert 'to epoch 1' not in rerun and 'search: 1 run(s) to end' in rerun
  with open(os.path.join(workdir, 'study.json')) as f:
    summary = json.load(f)
  (promoted,) = summary['rungs'][0]['promoted']
  runs = os.path.join(workdir, 'runs')
  for name in filter(os.path.isdir, os.listdir(runs)):
    status = run_helpers.read_status(os.path.join(runs, name))
    launches = _launches(os.path.join(runs, name))
    # ... each run trained to the rung once, in its first launch ...
    assert '--until_epoch=1' in launches[0]
    assert not any('--until_epoch=1' in launch for launch in launches[1:])
    if status['status'] == 'diverged':
      assert len(launches) == 1
      continue
    assert 'Stopped at epoch 1 of 2, as asked.' in launches[0]
    if len(launches) > 1:
      # ... and a later launch went on from the rung's checkpoint.
      assert 'Resuming from the checkpoint at step 150.' in launches[-1]
      assert status['epoch'] == 2
    else:
      assert status['epoch'] == 1
  assert len(_launches(os.path.join(runs, promoted))) == 3
  steps = sum(run['steps'] for run in summary['runs'])
  assert summary['steps_trained'] == steps
  assert summary['steps_full_grid'] == 3 * 2 * 150
  assert os.path.exists(os.path.join(workdir, 'study.png'))
  assert glob.glob(os.path.join(runs, '*.lettercnn_sweep_hparams'))
  assert '# Learning-rate study' in rerun


def test_a_promoted_run_ends_as_the_full_run_bit_for_bit(killed_study,
                                                         data_dir, tmp_path):
  workdir, *_ = killed_study
  with open(os.path.join(workdir, 'study.json')) as f:
    (promoted,) = json.load(f)['rungs'][0]['promoted']
  studied = run_helpers.read_status(os.path.join(workdir, 'runs', promoted))
  rate = studied['config']['learning_rate']
  full = tmp_path / 'full'
  subprocess.run(
      [sys.executable, '-m', 'lettercnn.main', '--config=configs/default.py',
       f'--workdir={full}', f'--config.data_dir={data_dir}', *_TINY,
       f'--config.learning_rate={rate!r}'], cwd=REPO_ROOT, check=True,
      capture_output=True)
  straight = run_helpers.read_status(full)
  assert straight['status'] == studied['status']
  assert len(_launches(os.path.join(workdir, 'runs', promoted))) == 3
  assert studied['params_sha256'] == straight['params_sha256']


# --- Refusals: one line, before any data is built ----------------------------


@pytest.mark.parametrize('args,message', [
    (['--eta=1'], '--eta=1: successive halving keeps 1/eta'),
    (['--rates='], '--rates= holds no rates'),
    (['--rates=1e-3,1e-50'], '--rates holds 1e-50, which is not a positive '
     'float32'),
    (['--rates=1e-3,1e39'], 'not a positive float32'),
    (['--decades=0'], '--decades=0 must be above 0'),
    (['--seeds=0'], '--seeds=0 must be at least 1'),
    (['--config.learning_rate=0.1'], 'give the rates with --rates'),
    (['--config.optimizer=sdg'], 'optimizer'),
])
def test_bad_settings_are_one_line_before_any_data(args, message, tmp_path):
  workdir, data = tmp_path / 'study', tmp_path / 'data'
  result = subprocess.run(
      [sys.executable, '-m', 'lettercnn.study', '--config=configs/default.py',
       f'--workdir={workdir}', f'--config.data_dir={data}', *args],
      cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('study: error: '), lines
  assert message in lines[0]
  assert not data.exists() and not workdir.exists()


def _refused(workdir, tmp_path, *args):
  # A refusal comes in seconds; a study that is not refused would build the
  # full dataset and train: the timeout fails the test instead.
  return subprocess.run(
      [sys.executable, '-m', 'lettercnn.study', '--config=configs/default.py',
       f'--workdir={workdir}', f'--config.data_dir={tmp_path / "data"}',
       '--rates=1e-3,1e-2', '--config.batch_size=2', *args],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_another_study_or_a_foreign_folder_is_refused(tmp_path):
  workdir = tmp_path / 'study'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('mine')
  result = _refused(workdir, tmp_path)
  assert result.returncode == 2 and 'holds files no study wrote (notes.txt)' \
      in result.stderr, result.stderr[-2000:]
  (workdir / 'notes.txt').unlink()
  # A study's recorded settings: the same command resumes, another is refused.
  from lettercnn.study import run as study_run  # pylint: disable=g-import-not-at-top
  # The overrides as the study records them: sorted, one per field.
  settings = study_run.Settings('configs/default.py', (
      '--config.batch_size=2', f'--config.data_dir={tmp_path / "data"}'),
      rates=(1e-3, 1e-2))
  study_run.record_settings(str(workdir), settings)
  result = _refused(workdir, tmp_path, '--eta=4')
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'holds another study (its eta differ' in result.stderr
  assert (workdir / study_run.SETTINGS_FILE).read_text() == json.dumps(
      settings.as_json(), indent=1)
  assert not (tmp_path / 'data').exists()


def test_a_second_study_into_a_busy_folder_is_refused(tmp_path):
  from lettercnn.run import workdir as workdir_guard  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'study'
  with workdir_guard.locked(str(workdir)):
    result = _refused(workdir, tmp_path)
  assert result.returncode == 75, result.stderr[-2000:]
  assert f'is in use by process {os.getpid()}' in result.stderr
  assert not (tmp_path / 'data').exists()
