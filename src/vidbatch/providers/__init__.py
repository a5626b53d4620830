"""Video providers: the GrsAI client, the registry of providers by name, and the GrsAI
simulator. The interface they implement is :mod:`vidbatch.domain.provider`."""
