"""Lottery tickets (Frankle & Carbin 2019): masks beside a network's parameters, and pruning."""
