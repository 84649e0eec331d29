"""The platform as local processes under supervisord (see `python -m deploy.local --help`)."""
