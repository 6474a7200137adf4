// A four-rank host world (two CFG halves) for the tests of how ranks stop:
//   world_probe late-peer  rank 0 returns at once while ranks 2 and 3 still
//                          exchange (rank 2 arrives late): all exit cleanly;
//   world_probe dead-peer  rank 2 exits with status 3 before the exchange
//                          rank 3 waits on: rank 3 stops instead of hanging;
//   world_probe stuck-peer rank 0 stops on an error while the other ranks
//                          compute on, never reaching a barrier (as in an NCCL
//                          collective): rank 0 exits all the same, with status 1.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include "core/error.h"
#include "parallel/world.h"

int main(int argc, char** argv) {
  using namespace pab;
  const std::string scenario = argc == 2 ? argv[1] : "";
  if (scenario != "late-peer" && scenario != "dead-peer" && scenario != "stuck-peer") {
    std::cerr << "usage: world_probe late-peer|dead-peer|stuck-peer\n";
    return 2;
  }
  try {
    set_program_arguments(argc, argv);
    ParallelGroups g = join_world({4, Device::cpu, "host", true});
    const int rank = g.sequence->rank() + 2 * g.cfg->rank();  // sequence groups {0, 1} and {2, 3}
    int mine = rank, all[2];
    g.cfg->all_gather(&mine, all, sizeof mine, Device::cpu);  // every rank is up
    if (scenario == "stuck-peer") {
      if (rank == 0) fail("rank 0 gave up");
      std::this_thread::sleep_for(std::chrono::minutes(10));
    }
    if (rank == 2) {
      if (scenario == "dead-peer") ::_exit(3);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    if (rank >= 2) g.sequence->all_gather(&mine, all, sizeof mine, Device::cpu);
    if (rank == 3 && (all[0] != 2 || all[1] != 3)) fail("rank 3 gathered ", all[0], ", ", all[1]);
    return 0;
  } catch (const std::exception& e) {
    note_world_error(e.what());
    std::cerr << "world_probe: error: " << e.what() << "\n";
    return 1;
  }
}
