"""Sequential fine-tuning: one adapter trained task after task."""

from keras_pam.strategies.strategy import Strategy


class Finetune(Strategy):
    """Sequential fine-tuning: no merge, no alignment (the paper's lower
    bound). The global adapter is simply the last trained one.

    Example:
    ```python
    learner = ContinualLearner(causal_lm, strategy=Finetune())
    ```
    """

    name = "finetune"
