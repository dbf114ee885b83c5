"""The study's decisions, from what its runs have done so far; no I/O.

Every decision is a function of the runs' validation accuracies, epoch by
epoch, so a study that is stopped and rerun decides again, the same way, and
trains only what is still missing. The rules (docs/study.md):

- Rungs: successive halving over epochs. With R = num_epochs and K rungs,
  rung k (k = 0 ... K-1) is at round(R / eta^(K-1-k)) epochs; K is as many as
  the grid holds, 1 + floor(log_eta(runs)), but never a first rung under one
  epoch. Every run trains to the first rung; at each rung the best
  floor(n / eta) of the n runs that entered it (at least one), ranked by their
  best validation accuracy so far, go on to the next. Ties go to the lower
  rate.
- Failure: a run has failed at an epoch if it diverged by then, or if its
  last two validation accuracies (its only one, after one epoch) lie within
  `margin_points` of chance, the not-converged rule of lettercnn.main applied
  early. A failed run leaves at the rung where it is seen, whatever its rank.
- Confirm: the search's best runs to the end with seeds 0 ... N-1 (seed 0 is
  the search's own run). The runner-up is confirmed the same way unless its
  accuracy at the rung that ranked it lies below every seed of the best at
  that epoch; so is a run trained to the end for the edge unless its final
  accuracy lies below every seed of the best. The best rate is the confirmed
  one whose seeds' mean best accuracy is highest.
- Edge: above the best rate, the smallest rate with a failed run, and the
  largest below it at which every run converged. Whichever rate sits just
  below the smallest failure trains to the end, so that "converged" is seen,
  not assumed; if it fails there, the edge moves down and the next one does.
"""

import dataclasses
import math
import statistics
from typing import Sequence

from lettercnn.study import rates

# The stages of a study, in the order it goes through them.
SEARCH = 'search'
CONFIRM = 'confirm'


@dataclasses.dataclass(frozen=True)
class Trial:
  """What the study knows of one run.

  Attributes:
    name: the run's folder name.
    rate: its learning rate.
    seed: its seed.
    val_accuracy: its validation accuracy after each epoch trained, in order.
    status: its status.json's: 'running' (also when stopped at a rung),
      'converged', 'not_converged' or 'diverged' (in the epoch after the
      last one listed).
  """
  name: str
  rate: float
  seed: int
  val_accuracy: tuple[float, ...] = ()
  status: str = 'running'

  @property
  def epochs(self) -> int:
    return len(self.val_accuracy)

  @property
  def diverged(self) -> bool:
    return self.status == 'diverged'

  @property
  def converged(self) -> bool:
    return self.status == 'converged'

  @property
  def finished(self) -> bool:
    return self.status in ('converged', 'not_converged', 'diverged')

  def reached(self, epoch: int) -> bool:
    """Trained through `epoch`, or finished before it by diverging."""
    return self.finished or self.epochs >= epoch

  def best(self, epoch: int) -> float:
    """The best validation accuracy of the first `epoch` epochs (-1: none)."""
    return max(self.val_accuracy[:epoch], default=-1.0)

  def failed(self, epoch: int, chance: float, margin_points: float) -> bool:
    """Failed by `epoch`: diverged; at chance for its last two accuracies
    (its only one, after one epoch); or finished without converging."""
    if self.diverged and epoch > self.epochs:
      return True
    if self.status == 'not_converged' and epoch >= self.epochs:
      return True
    last = self.val_accuracy[:epoch][-2:]
    return bool(last) and all(
        100 * acc - 100 * chance <= margin_points for acc in last)

  def failed_so_far(self, chance: float, margin_points: float) -> bool:
    """`failed` at the run's latest: its last epoch, or its divergence."""
    return self.failed(self.epochs + 1, chance, margin_points)


@dataclasses.dataclass(frozen=True)
class Rung:
  """One rung's decision: the runs that entered, ranked, and who went on."""
  epoch: int
  ranked: tuple[str, ...]      # the runs that had not failed, best first
  failed: tuple[str, ...]
  promoted: tuple[str, ...]    # empty at the last rung


@dataclasses.dataclass
class Plan:
  """What is decided so far and what to train next.

  `train` maps a run's name to the epoch it must train to now (None: to the
  end), for runs that exist or must be started (`new`: name -> (rate, seed)).
  """
  stage: str
  rungs: list[Rung] = dataclasses.field(default_factory=list)
  train: dict[str, int | None] = dataclasses.field(default_factory=dict)
  new: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)
  best: str | None = None
  runner_up: str | None = None
  # Each confirmed rate's seeds' best validation accuracies.
  confirmed_rates: dict[float, list[float]] = dataclasses.field(
      default_factory=dict)
  best_rate: float | None = None
  largest_converged_rate: float | None = None
  smallest_failed_rate: float | None = None

  @property
  def done(self) -> bool:
    return not self.train

  @property
  def confirmed(self) -> list[float]:
    """The best rate's seeds' best validation accuracies."""
    return self.confirmed_rates.get(self.best_rate, [])


def rung_epochs(num_epochs: int, eta: int, num_runs: int,
                num_rungs: int | None = None) -> list[int]:
  """The epochs of the rungs, increasing, the last `num_epochs`."""
  if num_rungs is None:
    num_rungs = 1 + int(math.floor(math.log(max(num_runs, 1), eta) + 1e-9))
  epochs = []
  for k in range(num_rungs):
    epoch = round(num_epochs / eta ** (num_rungs - 1 - k))
    if epoch >= 1 and (not epochs or epoch > epochs[-1]):
      epochs.append(epoch)
  if not epochs or epochs[-1] != num_epochs:
    epochs.append(num_epochs)
  return epochs


def successive_halving(trials: Sequence[Trial], rungs: Sequence[int], eta: int,
                       chance: float, margin_points: float) -> Plan:
  """The search's rungs decided so far, and the runs behind the next one."""
  plan = Plan(SEARCH)
  alive = sorted(trials, key=lambda t: t.rate)
  for k, epoch in enumerate(rungs):
    behind = [t for t in alive if not t.reached(epoch)]
    if behind:
      plan.train = {t.name: (None if epoch == rungs[-1] else epoch)
                    for t in behind}
      return plan
    failed = [t for t in alive if t.failed(epoch, chance, margin_points)]
    ranked = sorted((t for t in alive if t not in failed),
                    key=lambda t: (-t.best(epoch), t.rate))
    last = k == len(rungs) - 1
    keep = 0 if last else max(1, len(alive) // eta)
    promoted = ranked[:keep]
    plan.rungs.append(Rung(epoch, tuple(t.name for t in ranked),
                           tuple(t.name for t in failed),
                           tuple(t.name for t in promoted)))
    if last:
      break
    alive = promoted
  return plan


def _runner_up(rungs: Sequence[Rung], best: str) -> tuple[str, int] | None:
  """The best-ranked other run at the highest rung that ranked one, and
  that rung's epoch."""
  for rung in reversed(rungs):
    others = [name for name in rung.ranked if name != best]
    if others:
      return others[0], rung.epoch
  return None


def study_plan(trials: Sequence[Trial], rungs: Sequence[int], eta: int,
               seeds: int, chance: float, margin_points: float) -> Plan:
  """The whole study's state: the search, then the confirmation and edge.

  `trials` holds every run of the study: the search's (seed 0, one a rate)
  and the confirmation's extra seeds.
  """
  search_trials = [t for t in trials if t.seed == 0]
  by_name = {t.name: t for t in trials}
  plan = successive_halving(search_trials, rungs, eta, chance, margin_points)
  if not plan.done:
    return plan
  plan.stage = CONFIRM
  num_epochs = rungs[-1]
  top = plan.rungs[-1].ranked
  if not top:
    return plan  # Every run failed: there is no best rate and no edge.
  plan.best = top[0]
  runner_up = _runner_up(plan.rungs, plan.best)

  def need(name: str, rate: float, seed: int) -> Trial | None:
    """The trial if it is finished; else asks for it and returns None."""
    trial = by_name.get(name)
    if trial is not None and trial.reached(num_epochs):
      return trial
    plan.train[name] = None
    if trial is None:
      plan.new[name] = (rate, seed)
    return None

  def confirm(name: str) -> list[Trial] | None:
    rate = by_name[name].rate
    found = [need(rates.run_name(rate, s), rate, s) for s in range(seeds)]
    return None if None in found else found

  best_seeds = confirm(plan.best)
  confirmed = {plan.best: best_seeds}
  if runner_up is not None and best_seeds is not None:
    # Compared at the rung that ranked them, with the best's seeds there.
    plan.runner_up, where = runner_up
    floor = min(t.best(where) for t in best_seeds)
    if by_name[plan.runner_up].best(where) >= floor:
      confirmed[plan.runner_up] = confirm(plan.runner_up)
  _edge(plan, trials, by_name, chance, margin_points, need)
  if best_seeds is not None:
    # A search run trained to the end for the edge is a full run too: if the
    # best's seeds cannot separate it from the best, it is confirmed.
    floor = min(t.best(num_epochs) for t in best_seeds)
    for t in sorted(search_trials, key=lambda t: t.rate):
      if (t.name not in confirmed and t.converged and t.epochs >= num_epochs
          and t.best(num_epochs) >= floor):
        confirmed[t.name] = confirm(t.name)
  if plan.done:
    plan.confirmed_rates = {
        by_name[name].rate: [t.best(num_epochs) for t in found]
        for name, found in confirmed.items()}
    plan.best_rate = max(plan.confirmed_rates, key=lambda rate: (
        statistics.mean(plan.confirmed_rates[rate]), -rate))
  return plan


def edge(trials: Sequence[Trial], best_rate: float, chance: float,
         margin_points: float) -> tuple[float | None, float | None,
                                        float | None]:
  """The edge above `best_rate`: (the largest rate at which every run
  converged, the smallest at which one failed, the rate that decides the
  first: the largest below that failure). The same rule reads a full grid.
  """
  grid = sorted({t.rate for t in trials})
  failed_rates = sorted({t.rate for t in trials if t.rate >= best_rate and
                         t.failed_so_far(chance, margin_points)})
  smallest_failed = failed_rates[0] if failed_rates else None
  below = [r for r in grid if smallest_failed is None or r < smallest_failed]
  if not below:
    return None, smallest_failed, None
  candidate = below[-1]
  converged = all(t.converged for t in trials if t.rate == candidate)
  return (candidate if converged else None), smallest_failed, candidate


def _edge(plan: Plan, trials: Sequence[Trial], by_name: dict[str, Trial],
          chance: float, margin_points: float, need) -> None:
  """Sets the plan's edge, or asks for the run that decides it."""
  converged, plan.smallest_failed_rate, candidate = edge(
      trials, by_name[plan.best].rate, chance, margin_points)
  if candidate is not None and need(
      rates.run_name(candidate), candidate, 0) is not None:
    plan.largest_converged_rate = converged
