# shellcheck shell=bash disable=SC2034  # the names are read by the scripts that source this file
# User settings of bash_files/run_remote.sh, run_local.sh and fetch_results.sh: the ONE
# file you edit (the scripts need no editing). Use it via
#   cp bash_files/settings.example.sh bash_files/settings.sh    # git-ignored; then edit
# or name another file with MTL_SETTINGS=FILE / --settings FILE.
# Plain bash: KEY=value, arrays as (a b c). Unknown UPPERCASE names are rejected.

# ---- where -------------------------------------------------------------------------
SSH_HOST=euler                 # ssh alias of the cluster (what you type after 'ssh'); set it up
                               # in ~/.ssh/config with a key, so that 'ssh euler true' needs no password
SSH_OPTS=()                    # extra ssh options, e.g. (-p 2222) or (-F ~/.ssh/other_config)
REMOTE_DIR=multi_task_learning # folder on the cluster for the code and runs/; absolute, or relative
                               # to the remote home (~/x means the same as x)
SCHEDULER=slurm                # slurm | lsf

# ---- software on the cluster ----------------------------------------------------------
MODULE_LOADS=()                # modules loaded before python runs, e.g. (stack/2024-06 python/3.11.6)
PYTHON=python3                 # python that creates the venv REMOTE_DIR/.venv (on first use and
                               # whenever requirements.txt changes: pip install -r requirements.txt)
REMOTE_VENV=''                 # instead: an EXISTING venv to use as is (never created or changed
                               # by the scripts); absolute, ~/..., or relative to REMOTE_DIR

# ---- what runs --------------------------------------------------------------------------
EXPERIMENT=compositeSine       # folder in experiments/ (env MTL_EXPERIMENT or --experiment override it)
TRAINER_ARGS=(                 # passed as main.py --config_trainer key:value ... (also by run_local.sh)
  max_epochs:100
  # accelerator:gpu
  # devices:1                  # Slurm: devices == TASKS_PER_NODE, num_nodes == NODES
  # num_nodes:1
  # strategy:ddp
)
WANDB=''                       # online | offline | disabled; empty: main.py's default. Compute nodes
                               # often have no internet: use offline and fetch_results.sh brings the
                               # runs back (then: wandb sync wandb/offline-run-*)
POINTS_PER_TASK=1              # grid points per array element (and per run_local.sh task), run one
                               # after another in ONE main.py call (--num_config a-b): K=4 makes an
                               # array of ceil(N/4) elements; TIME must then cover 4 points. Many
                               # short points: fewer, longer jobs (less queueing, one start-up)
VECTORIZE=0                    # 1: main.py --vectorize (trains the points of one call together)

# ---- resources of EACH array element (POINTS_PER_TASK grid points) ----------------------
TIME=04:00:00                  # HH:MM:SS or D-HH:MM:SS (LSF: rounded up to whole minutes)
CPUS=4                         # cores per task (Slurm --cpus-per-task; LSF -n)
MEM=8G                         # memory per node (Slurm --mem; LSF: divided per core, rusage[mem=MB])
GPUS=0                         # GPUs per node (Slurm --gres=gpu:K; LSF -gpu "num=K")
NODES=1                        # Slurm --nodes; more than 1 task in all -> launched with srun
TASKS_PER_NODE=1               # Slurm --ntasks-per-node: one task (process) per GPU for DDP.
                               # LSF: keep NODES=1 TASKS_PER_NODE=1 (Lightning starts the
                               # devices:K processes itself on the one node)
ARRAY_THROTTLE=''              # at most K elements running at once (sbatch --array=1-N%K,
                               # bsub -J "TAG[1-N]%K"); empty: no limit
PARTITION=''                   # Slurm partition (empty: the cluster's default)
QUEUE=''                       # LSF queue (empty: the cluster's default)
EXTRA_SBATCH=()                # more #SBATCH lines, one option each, e.g. (--account=ls_math --constraint=EPYC_7763)
EXTRA_BSUB=()                  # more #BSUB lines, e.g. ('-G ls_math' '-R "select[gpu_mtotal0>=10240]"')
