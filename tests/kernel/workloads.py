"""Workload programs (run with kernel_harness.python_argv) that several kernel tests share."""

# Opens argv[1] with O_DIRECT, prints "ready", then for each "write BYTES" line writes BYTES
# (in argv[2]-byte writes from a page-aligned mmap buffer, as O_DIRECT requires) at the next
# offset and prints "wrote BYTES SECONDS".
DIRECT_WRITER = """
    import mmap, os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
    chunk = int(sys.argv[2])
    buf = mmap.mmap(-1, chunk)
    buf.write(b"\\xa5" * chunk)
    offset = 0
    print("ready", flush=True)
    for line in sys.stdin:
        total, done = int(line.split()[1]), 0
        start = time.monotonic()
        while done < total:
            done += os.pwrite(fd, buf, offset + done)
        offset += done
        print("wrote", done, time.monotonic() - start, flush=True)
"""

# A fork bomb bounded by count: forks up to argv[1] children that wait on a pipe, stops at
# the first refusal, prints "forked N ERRNO", then on any input releases and reaps them.
FORKER = """
    import errno, os, sys
    tries = int(sys.argv[1])
    r, w = os.pipe()
    kids, refusal = 0, "none"
    for _ in range(tries):
        try:
            pid = os.fork()
        except OSError as e:
            refusal = errno.errorcode[e.errno]
            break
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        kids += 1
    print("forked", kids, refusal, flush=True)
    sys.stdin.readline()
    os.close(w)
    reaped = 0
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
        reaped += 1
    print("reaped", reaped, flush=True)
"""
