/*
 * tests/testproc.h - child processes for the tests that fork (a CUDA
 * context does not survive fork: those tests keep every CUDA call in
 * children).
 */
#ifndef SL_TESTPROC_H
#define SL_TESTPROC_H

#include "sightline/sightline.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Wait for n children: codes[i] = exit code, 128 + signal, or -1 when it
 * was still running after timeout_s (then killed). */
static inline void sl_test_wait_children(pid_t *pids, int *codes, int n, double timeout_s) {
    double t0 = sl_now();
    int left = n;
    for (int i = 0; i < n; i++) codes[i] = -2;
    while (left > 0) {
        for (int i = 0; i < n; i++) {
            if (codes[i] != -2) continue;
            int ws;
            pid_t r = waitpid(pids[i], &ws, WNOHANG);
            if (r == pids[i]) {
                codes[i] = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
                left--;
            }
        }
        if (left == 0) break;
        if (sl_now() - t0 > timeout_s) {
            for (int i = 0; i < n; i++)
                if (codes[i] == -2) {
                    kill(pids[i], SIGKILL);
                    waitpid(pids[i], NULL, 0);
                    codes[i] = -1;
                }
            break;
        }
        usleep(10000);
    }
}

/* Before NCCL starts in a child that is rank `rank` of a group sharing one
 * GPU: NCCL refuses two ranks on one GPU of one host ("duplicate GPU"), so
 * each rank claims another host id and the ranks talk over sockets on the
 * loopback interface. */
static inline void sl_test_nccl_share_gpu(const char *tag, int rank) {
    char host[96];
    snprintf(host, sizeof host, "%s-rank%d", tag, rank);
    setenv("NCCL_HOSTID", host, 1);
    setenv("NCCL_SOCKET_IFNAME", "lo", 0);
    setenv("NCCL_IB_DISABLE", "1", 0);
}

#endif
