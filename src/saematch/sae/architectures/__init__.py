"""SAE architectures, one module each, registered in :data:`saematch.registry.SAE_ARCHITECTURES`.

An architecture is a frozen subclass of :class:`saematch.config.SAEConfig`
that adds its own parameters, builds its SAELens training SAE
(``training_sae``) and states its bound on active latents per unit
(``max_active``; None means no bound, and encoding keeps every positive
activation).  Adding one is one new module here.
"""
