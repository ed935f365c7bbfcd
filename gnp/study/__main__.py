"""``python -m gnp.study``: the reproduction study's command line (``gnp.study.main``)."""

import signal
import sys

from gnp.files import DamagedFile
from gnp.study.main import main
from gnp.train.distributed import PlatformMissing, check_platforms
from gnp.train.stops import Preempted, describe_stop, exit_at_once_on_interrupt

try:
    check_platforms()
    main(sys.argv[1:])
except (DamagedFile, PlatformMissing) as error:  # a torn results file, a missing platform
    sys.exit(f"error: {error}")
except (Preempted, KeyboardInterrupt) as error:  # a stop asked for: the study ends here
    code, _ = describe_stop(error)  # its exit code; the study says its own line
    print(
        f"the study stopped on request ({signal.Signals(code - 128).name}); its finished runs "
        "are kept: run the same command to go on (a run it stopped in is trained again)",
        file=sys.stderr,
    )
    sys.exit(code)
finally:  # the last line is said: a Ctrl-C now must not print a traceback after it
    exit_at_once_on_interrupt()
