"""Contracts every K2 service agrees on: settings, topics, instruments, schemas, metrics.

Nothing in here imports a service; services import only from here.
"""
