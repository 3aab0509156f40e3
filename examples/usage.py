"""What the command line's modules share below the parser: the one-line error, and the
help text of --devices (run, compare and bench all take it)."""


class UsageError(Exception):
    """A bad command line or input file: reported in one line, exit status 2."""


DEVICES_HELP = ("data parallel on N devices (default 1): each global batch split into N equal "
                "shards, the loss its global mean; torch: N DistributedDataParallel processes "
                "(gloo on CPU); jax: jax.sharding over N devices, on a CPU made by setting "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N, which this command does "
                "before JAX starts")
