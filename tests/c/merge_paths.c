/* merge_paths.c: add journal "j" of DIRECTORY to a C merge, then the same journal spelt otherwise.
 * Prints "SPELLING rc MESSAGE" per spelling, then "frames N" (every frame the merge hands out).
 * Usage: merge_paths DIRECTORY (absolute, holding journal "j"; run from its parent). */
#include "mmipc.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] != '/') {
        fprintf(stderr, "usage: merge_paths /DIRECTORY\n");
        return 2;
    }
    const char *base = strrchr(argv[1], '/') + 1;
    char spellings[5][4096];
    snprintf(spellings[0], sizeof(spellings[0]), "%s", argv[1]);
    snprintf(spellings[1], sizeof(spellings[1]), "%s/", argv[1]);
    snprintf(spellings[2], sizeof(spellings[2]), "%s//.", argv[1]);
    snprintf(spellings[3], sizeof(spellings[3]), "%s/../%s", argv[1], base);
    snprintf(spellings[4], sizeof(spellings[4]), "%s", base);  /* relative to the working directory */
    mmipc_merge *m = NULL;
    if (mmipc_merge_open(&m) != MMIPC_OK) {
        return 3;
    }
    for (int i = 0; i < 5; i++) {
        int rc = mmipc_merge_add(m, spellings[i], "j", MMIPC_START_BEGIN, 0);
        printf("%s %d %s\n", spellings[i], rc, rc < 0 ? mmipc_last_error() : "");
    }
    mmipc_frame frame;
    int count = 0, rc;
    while ((rc = mmipc_merge_read(m, &frame)) == 1) {
        count++;
    }
    printf("frames %d rc %d\n", count, rc);
    mmipc_merge_close(m);
    return 0;
}
