"""Process hardening before exec: capabilities, user switch, rlimits, fds, seccomp."""
