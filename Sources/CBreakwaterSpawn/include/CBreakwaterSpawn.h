#ifndef C_BREAKWATER_SPAWN_H
#define C_BREAKWATER_SPAWN_H

#include <spawn.h>

/// Adds a spawn action that closes every file descriptor from `lowest` up in the child, before
/// it runs its program: glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later),
/// which Swift's Glibc module does not show, since it is declared only under _GNU_SOURCE.
///
/// Returns 0, or an error number: ENOSYS where the C library has no such action.
int c_breakwater_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int lowest);

#endif
