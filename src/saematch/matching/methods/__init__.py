"""Matching methods, one module each, registered in :data:`saematch.registry.MATCHERS`.

A method is a frozen subclass of :class:`saematch.config.MatchConfig` that
adds its own parameters and implements ``assign(XA, XB) -> Assignment`` on two
CSR feature-activation matrices over the same units.  Adding one is one new
module here.
"""
