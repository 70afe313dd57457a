"""Tasks: their types, masked losses and metrics.

    from mtljax import tasks
    tasks.Binary("cat"), tasks.Multiclass("digit", num_classes=10),
    tasks.Regression("age", loss="huber")
"""

from mtljax.tasks.types import Binary
from mtljax.tasks.types import Multiclass
from mtljax.tasks.types import PRIMARY
from mtljax.tasks.types import Regression
from mtljax.tasks.types import Task
from mtljax.tasks.types import TaskType

__all__ = ["Binary", "Multiclass", "Regression", "Task", "TaskType", "PRIMARY"]
