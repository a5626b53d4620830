"""Video providers: the GrsAI client and the GrsAI simulator. The interface they implement
is :mod:`vidbatch.domain.provider`."""
