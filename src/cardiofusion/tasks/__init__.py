"""Targets beyond one binary label: the :class:`Task` (data, saved with every run and bundle) and what each
kind needs from the layers around it (label encoding, losses, score tables, decisions).

``load_task("as_severity")`` / ``load_task("my_task.yaml")`` / ``Task.from_dict({...})``; see
:mod:`cardiofusion.tasks.spec` for the kinds and the score-table columns.
"""

from .builtin import BUILTIN_TASKS, builtin_tasks
from .losses import encode_targets, task_loss, task_pos_weight
from .spec import KINDS, LINKS, TargetScaler, Task, binary_task, load_task

__all__ = ["BUILTIN_TASKS", "KINDS", "LINKS", "TargetScaler", "Task", "binary_task", "builtin_tasks", "encode_targets",
           "load_task", "task_loss", "task_pos_weight"]
