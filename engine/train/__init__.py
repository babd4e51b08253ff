"""Training: the run (events, phases, run folder), the loop, optimizers, schedules, losses, state.

`python -m engine train CONFIG` enters through `engine.train.cli:main`.
"""
