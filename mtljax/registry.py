"""One registry per kind of component: a new component is one file + one line.

    from mtljax import registry

    @registry.ENCODERS.register("tiny_mlp")
    class TinyMLP(nnx.Module):
      def __init__(self, in_shape, *, width, depth, dropout, dtype, rngs,
                   hidden=32):          # `hidden`: its own setting
        ...

    config.model.encoder = "tiny_mlp"
    config.model.encoder_kwargs = {"hidden": 64}   # checked against __init__

Config validation reads the registries (`names()`), so there are no parallel
lists of allowed values, and a component's own settings pass through from an
open sub-config (big_vision style) as keyword arguments, checked against the
factory's signature with the same one-line errors as every other field.

The registries live in this leaf module so that `config` can validate
against them. Each knows the module that registers its built-ins and imports
it on first use, so `ENCODERS.names()` is complete whoever asks first; a
user's component registers itself when its module (or experiment file) is
imported.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Iterable

from mtljax import errors


class Registry:
  """Name -> factory for one kind of component."""

  def __init__(self, kind: str, field: str, builtins: str | None = None):
    """Args:
      kind: what is registered, for messages ("encoder").
      field: the config field that names one ("model.encoder").
      builtins: module that registers the built-in components.
    """
    self.kind = kind
    self.field = field
    self._builtins = builtins
    self._loaded = builtins is None
    self._entries: dict[str, Any] = {}

  def _load(self) -> None:
    if not self._loaded:
      self._loaded = True  # first: the module's own register calls land here
      importlib.import_module(self._builtins)

  def register(self, name: str, obj: Any = None, *, overwrite: bool = False):
    """Registers `obj` under `name`; usable as a decorator.

    Re-registering an object of the same qualified name is allowed and
    replaces it: a notebook cell run twice, or an experiment file whose
    class was first defined in a notebook (its module name differs). Another
    object under a taken name needs overwrite.

    Returns:
      `obj`, or a decorator that registers and returns its argument.
    """
    if obj is None:
      return lambda o: self.register(name, o, overwrite=overwrite)
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.kind} name must be a non-empty string; got "
                       f"{name!r}")
    self._load()
    old = self._entries.get(name)
    if old is not None and not overwrite and (
        getattr(old, "__qualname__", old) != getattr(obj, "__qualname__", obj)):
      raise ValueError(f"{self.kind} {name!r} is already registered "
                       f"({_qualname(old)}); pass overwrite=True to replace it")
    self._entries[name] = obj
    return obj

  def names(self) -> tuple[str, ...]:
    self._load()
    return tuple(self._entries)

  def __contains__(self, name) -> bool:
    self._load()
    return name in self._entries

  def get(self, name: str) -> Any:
    """The component; ConfigError naming the field and the choices if unknown."""
    self._load()
    if name not in self._entries:
      hint = difflib.get_close_matches(str(name), list(self._entries), n=1)
      extra = f" (did you mean {hint[0]!r}?)" if hint else ""
      raise errors.ConfigError(
          f"config.{self.field}={name!r} is not a registered {self.kind}"
          f"{extra}; registered: {', '.join(self._entries)}")
    return self._entries[name]

  def check_kwargs(self, name: str, kwargs: dict, field: str,
                   provided: Iterable[str] = ()) -> None:
    """Checks a component's own settings against its factory's signature.

    Args:
      name: the registered component.
      kwargs: its settings from the config.
      field: their config field, for messages ("model.encoder_kwargs").
      provided: arguments that mtljax itself passes (not settable).

    Raises:
      ConfigError: an unknown setting, one that mtljax sets itself, or a
        required argument that is missing.
    """
    params = _parameters(self.get(name))
    if params is None:
      return  # no signature to check against (a builtin, a C function)
    provided = set(provided)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    own = [n for n, p in params.items()
           if n not in provided and p.kind in (p.KEYWORD_ONLY,
                                               p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
      if key in provided:
        raise errors.ConfigError(
            f"config.{field}.{key}: {key!r} is set by mtljax for every "
            f"{self.kind}; set config.{field.rsplit('.', 1)[0]}.{key} instead"
            if "." in field else f"config.{field}.{key} is set by mtljax")
      if key not in own and not takes_any:
        raise errors.ConfigError(
            f"config.{field}.{key}: {self.kind} {name!r} has no setting "
            f"{key!r}; its settings: {', '.join(own) or 'none'}")
    missing = [n for n in own if params[n].default is inspect.Parameter.empty
               and params[n].kind is not inspect.Parameter.VAR_POSITIONAL
               and n not in kwargs]
    if missing:
      raise errors.ConfigError(
          f"config.{field}: {self.kind} {name!r} needs the setting(s) "
          f"{', '.join(missing)}")


# Arguments every MTL method receives from the step (not hyperparameters).
_METHOD_ARGS = ("grads", "losses", "state", "mask", "step", "key", "lr")


def method_hparams(obj) -> tuple[str, ...]:
  """The hyperparameters of a registered weighting or aggregator.

  Its keyword arguments with a default, other than what the step passes
  every method; for an init/update pair, those of its `update` (or of the
  function that `update` wraps).
  """
  fn = getattr(obj, "update", obj)
  fn = getattr(fn, "__wrapped__", fn)
  params = _parameters(fn)
  if params is None:
    return ()
  return tuple(n for n, p in params.items() if n not in _METHOD_ARGS
               and p.default is not inspect.Parameter.empty)


def _parameters(obj: Callable) -> dict | None:
  try:
    sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
  except (TypeError, ValueError):
    return None
  params = dict(sig.parameters)
  params.pop("self", None)
  return params


def _qualname(obj) -> str:
  return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


ENCODERS = Registry("encoder", "model.encoder", "mtljax.models.encoders")
ARCHITECTURES = Registry("architecture", "model.arch", "mtljax.models.multitask")
DATASETS = Registry("dataset", "data.name", "mtljax.data.procedural")
TASK_TYPES = Registry("task type", "task type", "mtljax.tasks.types")
LOSS_WEIGHTINGS = Registry("loss weighting", "loss.normalize",
                           "mtljax.tasks.losses")
# Gradient aggregators: a stateless `fn(grads [T, P], **hparams) -> [P]`
# (mtljax.methods.aggregate), or a stateful mtljax.methods.base.Aggregator
# (init/update; GradVac, GradNorm, registered by mtljax.methods.stateful).
AGGREGATORS = Registry("aggregator", "method.aggregator",
                       "mtljax.methods.aggregators")
# Loss weightings as optax-style pairs (mtljax.methods.base.Weighting).
WEIGHTINGS = Registry("weighting", "method.weighting",
                      "mtljax.methods.weightings")
OPTIMIZERS = Registry("optimizer", "optimizer.name", "mtljax.core.optim")
SCHEDULES = Registry("schedule", "optimizer.schedule", "mtljax.core.optim")
