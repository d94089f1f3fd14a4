"""Pieces every kvminfo process shares."""
