"""K2 services. Each subpackage is an independent service; only `services.common` is shared."""
