"""Similarity metrics, one module each; :data:`saematch.registry.METRICS` imports them all.

Adding a metric is one new module here with a ``@register("name")`` class
(see :mod:`saematch.similarity.base`) and its test.
"""
