/*
 * concur.h - concurrent processing for C.
 *
 * Include this one header. Modules:
 *   concur/common.h  conventions: return codes, time, ownership
 *   concur/version.h the version of the headers and of the library
 *   concur/error.h   error codes and their messages
 *   concur/future.h  the task-function type, futures, sets of futures
 *   concur/pool.h    pools of workers (threads or processes)
 *   concur/map.h     the map family and chunk helpers
 *   concur/runner.h  running commands and functions concurrently, a result per task
 *   concur/swarm.h   n copies of one function, and a waiter
 *   concur/fork.h    fork calls (a child process per call) and waitfor
 */
#ifndef CONCUR_H
#define CONCUR_H

#include "concur/common.h"
#include "concur/version.h"
#include "concur/error.h"
#include "concur/future.h"
#include "concur/pool.h"
#include "concur/map.h"
#include "concur/runner.h"
#include "concur/swarm.h"
#include "concur/fork.h"
#include "concur/coro.h"
#include "concur/mpi.h"

#endif
