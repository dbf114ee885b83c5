"""A run's trained model, read from one of its checkpoints, for inference.

`load(workdir, 'best' | 'last' | 'STEP')` reads the workdir through
`checkpointing.CheckpointReader`, so nothing in the workdir changes, and checks
everything before any compute: that the workdir has the checkpoint, that the
run's model exists in this code, that the checkpoint's parameters fit it, and
that the run recorded its inputs (`run_inputs`).
"""

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from lettercnn.run import checkpoints as checkpointing
from lettercnn import errors
from lettercnn.models import networks as models
from lettercnn.run import inputs as run_inputs

BEST = 'best'
LAST = 'last'


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model and the parameters of one checkpoint of its run.

  `meta` is the run's status as saved with that checkpoint (config included).
  """
  workdir: str
  checkpoint: str  # 'best', 'last' or the step asked for.
  step: int
  meta: dict[str, Any]
  inputs: run_inputs.RunInputs
  model: nn.Module
  params: Any

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.inputs.class_names

  @property
  def epoch(self) -> float:
    return self.step / self.meta['steps_per_epoch']

  def describe(self) -> str:
    """'the best checkpoint (step 300, epoch 2)'."""
    kind = {BEST: 'the best checkpoint', LAST: 'the last checkpoint'}.get(
        self.checkpoint, 'the checkpoint')
    return f'{kind} (step {self.step}, epoch {self.epoch:g})'

  def top_k_fn(self, k: int) -> Callable[[Any, jax.Array],
                                         tuple[jax.Array, jax.Array]]:
    """A jitted (params, images) -> (probabilities, classes), each [N, k].

    The classes are ranked on the logits, so the first is the argmax that
    training's accuracy counts (ties to the lower class, as there), and
    probabilities are the softmax's.
    """
    apply_fn = self.model.apply

    def top_k(params, images):
      logits = apply_fn({'params': params}, images)
      _, classes = lax.top_k(logits, k)
      probabilities = jnp.take_along_axis(jax.nn.softmax(logits), classes, -1)
      return probabilities, classes

    return jax.jit(top_k)


def parse_checkpoint(spec: str) -> str:
  """'best', 'last' or a step's digits; InputError for anything else."""
  if spec in (BEST, LAST) or (spec.isdigit() and spec.isascii()):
    return spec
  raise errors.InputError(
      f'--checkpoint={spec!r} is not best, last or a step number')


def _choose_step(workdir: str, reader: checkpointing.CheckpointReader,
                 spec: str) -> int:
  steps, best = reader.steps(), reader.best_step()
  if not steps and best is None:
    raise errors.InputError(
        f'workdir {workdir} has no checkpoint (nothing in '
        f'{os.path.join(workdir, checkpointing.CHECKPOINT_DIR)}): train the '
        'run first, or check the path')
  if spec == LAST:
    if steps:
      return steps[0]
    raise errors.InputError(f'workdir {workdir} has only its best checkpoint '
                            f'(step {best}); use --checkpoint=best')
  if spec == BEST:
    if best is not None:
      return best
    raise errors.InputError(
        f'workdir {workdir} has no best checkpoint '
        f'({checkpointing.BEST_DIR}/): the run finished no epoch yet, or was '
        'trained before lettercnn kept one; use --checkpoint=last')
  step = int(spec)
  if step in steps or step == best:
    return step
  have = ', '.join(map(str, sorted(steps)))
  if best is not None:
    have += f' and {best} (best)' if have else f'{best} (best)'
  raise errors.InputError(
      f'workdir {workdir} has no checkpoint at step {step}; it has steps '
      f'{have}')


def _model(workdir: str, meta: dict[str, Any],
           num_classes: int) -> nn.Module:
  name = (meta.get('config') or {}).get('model')
  if name not in models.MODELS:
    raise errors.InputError(
        f'the run in {workdir} was trained with model {name!r}, which this '
        f'lettercnn does not have ({", ".join(sorted(models.MODELS))})')
  return models.create_model(name, num_classes)


def _check_params(workdir: str, step: int, params: Any, model: nn.Module,
                  inputs: run_inputs.RunInputs) -> None:
  channels = 1 if inputs.grayscale else 3
  expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(
      (1, inputs.image_size, inputs.image_size, channels)))['params']
  difference = checkpointing.first_difference(params, expected)
  if difference is not None:
    raise errors.InputError(
        f'the checkpoint at step {step} in {workdir} does not fit the model '
        f'its run names: {difference}; classify it with the code that '
        'trained it')


def load(workdir: str, spec: str) -> TrainedModel:
  """The model of the run in `workdir` at checkpoint `spec`.

  Raises:
    errors.InputError: no such workdir or checkpoint, a corrupt checkpoint,
      a model this code lacks, parameters that do not fit it, or no record
      of the run's inputs; one line each.
  """
  spec = parse_checkpoint(spec)
  if not os.path.isdir(workdir):
    raise errors.InputError(f'workdir {workdir} does not exist or is not a '
                            'folder')
  reader = checkpointing.CheckpointReader(workdir)
  try:
    step = _choose_step(workdir, reader, spec)
    snapshot = reader.read(step)
  except KeyError as e:  # A run still training deleted its oldest one.
    raise errors.InputError(
        f'the checkpoint at step {step} in {workdir} was deleted while being '
        'read (the run is still training); ask for a newer one') from e
  finally:
    reader.close()
  where = f'the checkpoint at step {step} in {workdir}'
  inputs = run_inputs.load(workdir, snapshot.meta, where)
  model = _model(workdir, snapshot.meta, len(inputs.class_names))
  try:
    params = snapshot.arrays['state']['params']
  except (KeyError, TypeError) as e:
    raise errors.InputError(f'{where} holds no model parameters') from e
  _check_params(workdir, step, params, model, inputs)
  return TrainedModel(workdir=workdir, checkpoint=spec, step=step,
                      meta=snapshot.meta, inputs=inputs, model=model,
                      params=jax.tree.map(np.asarray, params))
