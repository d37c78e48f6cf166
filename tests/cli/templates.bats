#!/usr/bin/env bats
# Replacement strings and how arguments are placed: {} {.} {/} {//} {/.} {#} {%} {n},
# appending when there is no placeholder, -n, -X. Compared with GNU parallel.

load helpers

PATHS=(/x/y/z.tar.gz rel.c 'a dir/b file.txt' noext ./dot.d/f)

@test "{} is the argument" {
  same_as_parallel -k -j1 printf '%s\\n' '={}=' ::: "${PATHS[@]}"
}

@test "{.} is the argument without its extension" {
  same_as_parallel -k -j1 printf '%s\\n' '={.}=' ::: "${PATHS[@]}"
}

@test "{/} is the basename" {
  same_as_parallel -k -j1 printf '%s\\n' '={/}=' ::: "${PATHS[@]}"
}

@test "{//} is the dirname" {
  same_as_parallel -k -j1 printf '%s\\n' '={//}=' ::: "${PATHS[@]}"
}

@test "{/.} is the basename without its extension" {
  same_as_parallel -k -j1 printf '%s\\n' '={/.}=' ::: "${PATHS[@]}"
}

@test "{#} is the job sequence number" {
  same_as_parallel -k echo '{#}' '{}' ::: a b c d e
}

@test "{%} is the job slot, between 1 and -j" {
  run "$CONCUR" -j2 'sleep 0.2; echo {%}' ::: 1 2 3 4
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$output" | sort -u | paste -sd' ')" = "1 2" ]
}

@test "{%} is 1 for every job with -j1" {
  same_as_parallel -k -j1 echo '{%}' ::: a b c
}

@test "{1} {2} name the arguments of each input group" {
  same_as_parallel -k echo '{2}{1}' '{1}' ::: a b ::: 1 2
}

@test "{2.} and {1/} apply the modifiers to one input group" {
  same_as_parallel -k echo '{2.}' '{1/}' ::: /p/q.r ::: s.t
}

@test "the arguments are appended when the command has no placeholder" {
  same_as_parallel -k echo x ::: a b
}

@test "all groups' arguments are appended when there is no placeholder" {
  same_as_parallel -k echo x ::: a b ::: 1 2
}

@test "a placeholder may appear several times" {
  same_as_parallel -k echo '{}-{}' '{.}' ::: f.c g.h
}

@test "-n 2 passes two arguments per job" {
  same_as_parallel -k -n 2 echo ::: a b c d e
}

@test "-n 2 with {1} {2} names the arguments of one job" {
  same_as_parallel -k -n 2 echo '{2}' '{1}' ::: a b c d
}

@test "-X puts as many arguments as fit in one job, repeating the context" {
  same_as_parallel -k -j1 -X echo 'pre-{}-post' ::: a b c
}

@test "-X without a placeholder appends all arguments" {
  same_as_parallel -k -j1 -X echo ::: a b c
}
