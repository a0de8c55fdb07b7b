/* GNU OpenMP's worker threads do not survive fork(): a child process that starts a
   parallel region after its parent ran one waits for them forever.  lysep's parallel
   kernels take their thread count from lysep_omp_threads(), which is 1 in a child
   forked after the parent went parallel (so multiprocessing's fork start method works;
   the results do not depend on the thread count).  A region with one thread does not
   touch the thread pool.  Without OpenMP every count is 1. */
#ifndef LYSEP_FORKSAFE_H
#define LYSEP_FORKSAFE_H

#ifdef _OPENMP
#include <pthread.h>

static int lysep_omp_started = 0;   /* this process ran a region on several threads */
static int lysep_omp_forked = 0;    /* ...and this is a child forked after that */

static void lysep_omp_child(void) { if (lysep_omp_started) lysep_omp_forked = 1; }

static int lysep_omp_init(void) { return pthread_atfork(NULL, NULL, lysep_omp_child); }

/* the threads a region asked for n may use */
static int lysep_omp_count(int n) { return n <= 1 || lysep_omp_forked ? 1 : n; }

/* the same, for a region about to start (marks the process as having gone parallel) */
static int lysep_omp_threads(int n)
{
    n = lysep_omp_count(n);
    if (n > 1)
        lysep_omp_started = 1;
    return n;
}
#else
static int lysep_omp_init(void) { return 0; }
static int lysep_omp_count(int n) { (void)n; return 1; }
static int lysep_omp_threads(int n) { (void)n; return 1; }
#endif

#endif
