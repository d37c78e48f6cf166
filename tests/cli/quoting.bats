#!/usr/bin/env bats
# The command words are joined into one shell line; each input argument is quoted as one
# word, so its characters stay literal. -q quotes the command words too. Compared with GNU
# parallel.

load helpers

SHOW='printf "<%s>\n"'

@test "an argument with spaces stays one word" {
  same_as_parallel -k "$SHOW" ::: 'a  b' ' lead' 'trail '
}

@test "an argument with quotes stays literal" {
  same_as_parallel -k "$SHOW" ::: "it's" '"dq"' "mix'\"ed"
}

@test "an argument with \$ is not expanded" {
  same_as_parallel -k "$SHOW" ::: '$HOME' '${PATH}' '$(echo no)' '`echo no`'
}

@test "an argument with * is not globbed" {
  touch f1 f2
  same_as_parallel -k "$SHOW" ::: '*' 'f?' '[f]1'
}

# (GNU parallel 20221122 splits such an argument in two words: concur keeps it literal.)
@test "an argument with a newline stays one word" {
  "$CONCUR" -k "$SHOW" ::: $'x\ny' $'\n' >out
  printf '<x\ny>\n<\n>\n' >want
  cmp out want
}

@test "an argument with shell operators stays literal" {
  same_as_parallel -k "$SHOW" ::: 'a;b' 'a|b' 'a&b' '>f' '<f' '(x)' '#c' '~' 'a\b'
  [ ! -e f ]
}

@test "an empty argument is passed as an empty word" {
  same_as_parallel -k "$SHOW" ::: '' x
}

@test "an argument read from a file is quoted too" {
  printf '%s\n' 'a  b' '$HOME' "it's" '*' >args
  same_as_parallel -k "$SHOW" :::: args
}

@test "-q quotes the command words, so they keep their spaces" {
  same_as_parallel -k -q printf '%s|%s\n' 'a  b' ::: x 'y z'
}

@test "without -q the command words are read by the shell" {
  same_as_parallel -k echo 'a  b' '$((1+2))' ::: x
}

@test "a pipe in the command works" {
  same_as_parallel -k 'echo {} | tr a-z A-Z' ::: abc def
}

@test "a redirection in the command works" {
  "$CONCUR" 'echo {} > {}.txt' ::: f1 f2
  [ "$(cat f1.txt)" = f1 ]
  [ "$(cat f2.txt)" = f2 ]
}

@test "; separates commands in the command" {
  same_as_parallel -k 'echo first; echo {}' ::: x y
}

@test "\$VAR in the command is expanded from the environment" {
  export CONCUR_TEST_VAR=from-env
  same_as_parallel -k 'echo $CONCUR_TEST_VAR' ::: x
}

@test "a glob in the command is expanded" {
  touch a.txt b.txt
  same_as_parallel -k 'echo *.txt' ::: x
}

@test "sh -c 'echo \$0-\$1' ::: x gives the same as GNU parallel" {
  same_as_parallel sh -c 'echo $0-$1' ::: x
}

@test "a command word with a quoted argument inside works" {
  same_as_parallel -k "sh -c 'echo \$0-\$1' {}" ::: x
}
