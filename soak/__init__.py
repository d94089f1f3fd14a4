"""Fault and abuse suite (`make soak`): real processes, real faults, figures for the README."""
