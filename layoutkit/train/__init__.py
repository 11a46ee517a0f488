"""Training: the driver (`driver.py`, one run read top-down), the tasks (`ner_task.py`, `classification_task.py`,
`relation_task.py`), their flags (`arguments.py`), the data and the training loop. Only training code imports
from here; the pipelines and the apps never do (tests/test_wings.py)."""
