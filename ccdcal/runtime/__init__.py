"""How work runs, without knowledge of the domain: counting the usable cores, the Dask cluster, process
ownership of files and Ctrl-C shielding."""
