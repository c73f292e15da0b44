"""Shared Lambda layer: domain models, repositories, run state machine, settings, errors.

Imports run one way: functions import this package; this package never imports functions.
"""
