"""Fault and abuse suite (`make soak`): real processes, real faults, figures for docs/dev/soak.md."""
