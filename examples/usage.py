"""What the command line's modules share below the parser: the one-line error, and the
help texts of --devices (run, compare and bench all take it) and --threads (run, compare)."""


class UsageError(Exception):
    """A bad command line or input file: reported in one line, exit status 2."""


DEVICES_HELP = ("data parallel on N devices (default 1): each global batch split into N equal "
                "shards, the loss its global mean; torch: N DistributedDataParallel processes "
                "(gloo on CPU); jax: jax.sharding over N devices, on a CPU made by setting "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N, which this command does "
                "before JAX starts")

# Measured on a shared 2-core machine (docs/speed.md, "Threads"): a second torch thread made
# the cnn's run 17x slower whenever other processes held the cores, while XLA's own
# pool made jaxport's faster than one thread. So by default each keeps its better one.
TORCH_DEFAULT_THREADS = 1
THREADS_HELP = ("intra-op threads, 1 to the machine's cores. Default: torch 1, jax XLA's own pool "
                "(a thread per core), each the faster measured. torch: torch.set_num_threads(N); "
                "jax: 1 runs XLA:CPU's matmuls on the calling thread (XLA_FLAGS="
                "--xla_cpu_multi_thread_eigen=false, set before JAX starts), more leaves XLA's pool. "
                "Torch's DDP ranks (--devices) use one thread each")
